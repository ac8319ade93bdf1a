"""The agent's rules, read from the tools themselves (tests/data/dev/plugins: plugins the
rules were developed against; the blind plugins are never used here).

Each case is a request and what the rules must fill for one tool: yes/no from the verbs a
parameter's description implies, numbers matched by unit and converted, the ends and
fractions of ranges, numbers said digit by digit, times of day, free text without its
carrier words, speech-to-text slips. Hostile and broken variants: templates that name
what a call lacks or walk attributes, tools with odd schemas, very long requests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.agents import freetext, knowledge, phrasing, remember
from edged.agents.fill import fill, mend
from edged.agents.timeofday import find as find_time
from edged.messages import ToolCall
from edged.tools import registry
from edged.tools.base import make_tool

ROOT = Path(__file__).resolve().parent.parent
TOOLS = registry.load([ROOT / "plugins", ROOT / "tests" / "data" / "dev" / "plugins"]).tools


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # yes/no from the description's verbs, not only on/off
    ("boat.set_pump", "fire up the bilge pump", {"running": True}),
    ("boat.set_pump", "kill the bilge pump", {"running": False}),
    ("boat.set_anchor_light", "light the anchor light", {"on": True}),
    ("home.set_light", "turn off the kitchen light", {"room": "kitchen", "on": False}),
    ("greenhouse.set_valve", "turn on the drip line for the seedlings",
     {"zone": "seedlings", "open": True}),
    ("greenhouse.set_valve", "shut the tomato valve", {"zone": "tomatoes", "open": False}),
    ("locks.set_lock", "don't unlock the front door", {"locked": True}),
    # units: said in another unit than the parameter's
    ("timers.set_timer", "i need a timer for half an hour", {"minutes": 30}),
    ("timers.set_timer", "a timer for an hour and a half", {"minutes": 90}),
    ("boat.preheat_engine", "preheat for half a minute", {"seconds": 30}),
    ("boat.set_fridge_temperature", "set the fridge to 41 fahrenheit", {"target": 5}),
    ("boat.set_fridge_temperature", "set the fridge to -1", {"target": -1}),
    # ends and fractions of a range, from "0 is ..., 100 is ..." in the description
    ("greenhouse.set_vent", "close the roof vents", {"opening": 0}),
    ("greenhouse.set_vent", "open the vents a quarter of the way", {"opening": 25}),
    ("greenhouse.set_vent", "vents three quarters open", {"opening": 75}),
    ("boat.set_awning", "bring the awning in", {"position": 0}),
    ("boat.set_awning", "stow the awning", {"position": 0}),
    ("boat.set_awning", "roll the awning out", {"position": 100}),
    ("boat.set_fridge_temperature", "fridge as cold as it'll go", {"target": -2}),
    ("hotel.set_lobby_music", "mute the lobby music", {"volume": 0}),
    # numbers said digit by digit, fitted to the parameter's range
    ("hotel.set_room_thermostat", "cool one twelve down to eighteen",
     {"room": 112, "celsius": 18}),
    ("hotel.set_room_thermostat", "turn 303's thermostat down to the minimum",
     {"room": 303, "celsius": 16}),
    # times of day for a time parameter; their numbers are not the room's
    ("hotel.set_wake_up_call", "wake-up call for 210 at 7am", {"room": 210, "at": "07:00"}),
    ("hotel.set_wake_up_call", "wake up call room one oh four six thirty",
     {"room": 104, "at": "06:30"}),
    ("hotel.set_wake_up_call", "wake up 205 at half past eight", {"room": 205, "at": "08:30"}),
    ("hotel.set_wake_up_call", "a call for room 317 at quarter to six",
     {"room": 317, "at": "05:45"}),
    # speech-to-text slips
    ("home.set_light", "um turn of the bedroom light", {"room": "bedroom", "on": False}),
])
def test_rules_fill_from_what_the_tool_says(tool: str, text: str, expected: dict) -> None:
    got = fill(text, TOOLS[tool])
    assert {k: got.get(k) for k in expected} == expected, got


@pytest.mark.parametrize(("tool", "text", "unexpected"), [
    # a question never sets state; a unit that does not fit is never put in
    ("boat.set_pump", "is the bilge pump running?", "running"),
    ("timers.set_timer", "set a timer for 2 kilograms", "minutes"),
    ("greenhouse.set_heater", "set the heater to 30 minutes", "target_celsius"),
    # "light" names the tool's object: not a verb in "turn off the light"
    ("boat.set_anchor_light", "is the anchor light on?", "on"),
])
def test_rules_leave_open_what_was_not_said(tool: str, text: str, unexpected: str) -> None:
    assert unexpected not in fill(text, TOOLS[tool])


@pytest.mark.parametrize(("tool", "param", "text", "expected"), [
    ("hotel.order_room_service", "items",
     "um room two oh six wants two cheeseburgers and fries from room service",
     "two cheeseburgers and fries"),
    ("hotel.order_room_service", "items",
     "Please send a bottle of prosecco and two glasses up to 301.",
     "a bottle of prosecco and two glasses"),
    ("hotel.order_room_service", "items", "can the kitchen bring a cheese plate to room 220",
     "a cheese plate"),
    ("boat.add_log_entry", "text", "Add to the log: anchored in Smuggler's Cove, 4m depth.",
     "anchored in Smuggler's Cove, 4m depth"),
    ("boat.add_log_entry", "text", "log entry saying refuelled 40 litres at the marina",
     "refuelled 40 litres at the marina"),
    ("boat.add_log_entry", "text", "put in the log that the engine was running rough",
     "the engine was running rough"),
    ("boat.add_log_entry", "text", "Write in the log book: reefed the main at 15:30",
     "reefed the main at 15:30"),
    ("notes.add_note", "text", "add call the plumber to my notes", "call the plumber"),
    ("notes.add_note", "text", 'note "buy milk and eggs"', "buy milk and eggs"),
])
def test_free_text_loses_its_carrier_words(tool: str, param: str, text: str,
                                           expected: str) -> None:
    t = TOOLS[tool]
    assert freetext.span(text, t, param, fill(text, t)) == expected


def test_knowledge_comes_from_descriptions_and_names() -> None:
    vent = knowledge.of(TOOLS["greenhouse.set_vent"]).params["opening"]
    assert vent.ranged and "close" in vent.lo_words and "open" in vent.hi_words
    room = knowledge.of(TOOLS["hotel.set_room_thermostat"]).params["room"]
    assert not room.lo_words  # an identifier has no "ends": "minimum" is not room 101
    assert knowledge.of(TOOLS["greenhouse.water_zone"]).params["duration_minutes"].unit == \
        "minute"
    assert knowledge.of(TOOLS["boat.set_pump"]).params["running"].true_words >= {
        "start", "fire up", "switch on"}
    # computed once per tool object
    assert knowledge.of(TOOLS["boat.set_pump"]) is knowledge.of(TOOLS["boat.set_pump"])


def test_times_of_day() -> None:
    assert find_time("at noon").format() == "12:00"  # type: ignore[union-attr]
    assert find_time("call me at 6:45 pm").format() == "18:45"  # type: ignore[union-attr]
    assert find_time("tuesday at 9").format(with_day=True) == "Tuesday 09:00"  # type: ignore
    assert find_time("set a timer for 10 minutes") is None
    assert find_time("nothing here") is None


def test_speech_mending_is_narrow() -> None:
    assert mend("uh turn of the light") == "turn off the light"
    assert mend("a cup of tea") == "a cup of tea"  # "of" stays where it means of
    assert mend("set it too twenty") == "set it to twenty"


def _tool(src: str, **options: object):
    ns: dict[str, object] = {}
    exec(src, ns)  # noqa: S102 - a plugin function defined by the test itself
    return make_tool(ns["f"], name="t.f", **options)  # type: ignore[arg-type]


def test_reply_templates_and_generic_sentences() -> None:
    t = _tool('def f(room: str, on: bool) -> dict:\n    """Switch a light."""\n    return {}',
              reply="The {room} lights are {on:on|off}.")
    call = ToolCall(tool="t.f", arguments={"room": "kitchen", "on": True},
                    result={"room": "kitchen", "on": False})
    assert phrasing.render([call], {"t.f": t}) == "The kitchen lights are off."
    # a template naming what the call lacks, walking attributes, or broken: generic
    for bad in ("The {nope} is set.", "{room.__class__.__mro__}", "{0}", "{room!z}", "{"):
        t.reply = bad
        said = phrasing.render([call], {"t.f": t})
        assert said == "The kitchen f is off." and "class" not in said
    # never a key:value dump
    said = phrasing.generic("home.set_light", {"room": "kitchen", "on": True},
                            {"room": "kitchen", "on": True, "brightness": 100})
    assert said == "The kitchen light is on, brightness 100"
    assert phrasing.generic("x.list_things", {}, []) == "Nothing yet"
    assert phrasing.render([ToolCall(tool="x.y", arguments={}, result={"error": "boom"})],
                           {}) == "Sorry, y failed: boom."


@pytest.mark.parametrize(("text", "op"), [
    ("remember that I like the study blinds at 30 percent", "remember"),
    ("I prefer the lights dim in the evening", "remember"),
    ("my daughter is called Emma", "remember"),
    ("keep in mind that I'm allergic to cats", "remember"),
    ("what do you remember about the bedroom", "recall"),
    ("forget that I like the study blinds at 30 percent", "forget"),
    ("remember to buy milk", None),  # a task, not a memory
    ("set the study blinds to 30 percent", None),
    ("is my door locked?", None),
    ("I'd like the lights on", None),  # a request, not a preference
])
def test_memory_statements_are_told_apart_from_commands(text: str, op: str | None) -> None:
    told = remember.told(text)
    assert (told.op if told else None) == op
    assert remember.told("note that the plumber comes friday", note_tool=True) is None


@pytest.mark.timeout(60)  # a regex that backtracks without end fails here, not in a device
def test_rules_survive_hostile_requests() -> None:
    """Very long, binary-looking and number-stuffed requests: no exception, a result of the
    declared types."""
    tool = TOOLS["hotel.set_wake_up_call"]
    for text in ["one " * 5000, "9" * 10000, "\x00\x01 " * 2000, "at at at " * 2000,
                 "minus " * 3000 + "5", "half " * 3000, "-" * 5000, "😀" * 3000]:
        got = fill(text, tool)
        assert all(isinstance(v, int | float | str | bool) for v in got.values()), got
        assert freetext.span(text, tool, "at", {}) is None or isinstance(
            freetext.span(text, tool, "at", {}), str)
        assert remember.told(text) is None or remember.told(text).op == "remember"


RESERVE = '''
from typing import Annotated, Literal
from msgspec import Meta

def f(name: str, party: Annotated[int, Meta(ge=1, le=12)],
      at: Annotated[str, Meta(pattern=r"^([01]\\d|2[0-3]):[0-5]\\d$")],
      table: Literal["window", "terrace", "bar"] = "window", note: str = "") -> dict:
    """Reserve a table at the restaurant.

    Args:
        name: Whose name the reservation is under.
        party: How many people.
        at: Time, 24-hour HH:MM.
        table: Where to sit.
        note: Anything the kitchen should know.
    """
    return {}
'''


@pytest.mark.parametrize(("text", "expected"), [
    ("reserve a table for maria lopez for four at 7pm",
     {"name": "maria lopez", "party": 4, "at": "19:00"}),
    ("book the terrace under john smith's name, two people at half past eight",
     {"name": "john smith", "party": 2, "at": "08:30", "table": "terrace"}),
    ("table for six at 20:15 for the Okafor family, one of them is allergic to nuts",
     {"party": 6, "at": "20:15", "note": "one of them is allergic to nuts"}),
])
def test_free_text_is_the_piece_the_other_arguments_leave(text: str, expected: dict) -> None:
    """A value among other arguments: cut where they stand, the longest piece is it."""
    tool = _tool(RESERVE)
    got = fill(text, tool)
    if "name" in expected:
        got["name"] = freetext.span(text, tool, "name", got)
    assert {k: got.get(k) for k in expected} == expected, got


CAFE = '''
from typing import Literal

def price(item: str, amount: float) -> dict:
    """Set what an item on the menu costs.

    Args:
        item: The menu item.
        amount: Price in euros.
    """
    return {}

def stock(item: str, delta: float, unit: Literal["pieces", "grams", "litres"] = "pieces") -> dict:
    """Record stock coming in or going out.

    Args:
        item: What.
        delta: How much; negative when stock goes out.
        unit: What delta is counted in.
    """
    return {}

def board(text: str) -> dict:
    """Write on the chalkboard by the door.

    Args:
        text: What it says; an empty string clears the board.
    """
    return {}
'''


def _cafe(name: str):
    ns: dict[str, object] = {}
    exec(CAFE, ns)  # noqa: S102 - plugin functions defined by the test itself
    return make_tool(ns[name], name=f"cafe.{name}")  # type: ignore[arg-type]


@pytest.mark.parametrize(("tool", "text", "expected"), [
    ("price", "the flat white is now three fifty", {"amount": 3.5}),
    ("price", "make the scones 2.80", {"amount": 2.8}),
    ("price", "croissants cost 3 euros 20 from today", {"amount": 3.2}),
    ("price", "espresso 90 cents", {"amount": 0.9}),
    ("stock", "we sold twelve muffins", {"delta": -12}),
    ("stock", "a delivery of 3 litres of oat milk came in", {"delta": 3, "unit": "litres"}),
    ("stock", "we threw out 500 grams of coffee", {"delta": -500, "unit": "grams"}),
    ("board", "clear the board", {"text": ""}),
])
def test_prices_signed_changes_unit_choices_and_clearing(tool: str, text: str,
                                                        expected: dict) -> None:
    got = fill(text, _cafe(tool))
    assert {k: got.get(k) for k in expected} == expected, got


@pytest.mark.parametrize(("tool", "params", "text", "expected"), [
    ("library.lend_book", "member,title", "Lend The Hobbit to Sarah Jones for three weeks",
     {"member": "Sarah Jones", "title": "The Hobbit"}),
    ("library.lend_book", "member,title", "check out Dune for Ali Hassan, 10 days",
     {"member": "Ali Hassan", "title": "Dune"}),
    ("library.lend_book", "member,title", "Loan 'Gone Girl' to member Jo Baxter for 5 days",
     {"member": "Jo Baxter", "title": "Gone Girl"}),
    ("library.lend_book", "member,title", "lend pride and prejudice to anna de vries for a month",
     {"member": "anna de vries", "title": "pride and prejudice"}),
    ("library.reserve_title", "member,title", "reserve the hunger games four zoe clark",
     {"member": "zoe clark", "title": "the hunger games"}),
    ("library.page_colleague", "colleague,message", "tell Tom the book van is here",
     {"colleague": "Tom", "message": "the book van is here"}),
    ("library.page_colleague", "colleague,message",
     "Tell Mr Gallagher that his visitor is waiting at reception",
     {"colleague": "Mr Gallagher", "message": "his visitor is waiting at reception"}),
    ("library.page_colleague", "colleague,message",
     "okay so let priya know the photocopier is jammed again",
     {"colleague": "priya", "message": "the photocopier is jammed again"}),
])
def test_several_free_text_arguments_share_the_request(tool: str, params: str, text: str,
                                                       expected: dict) -> None:
    t = TOOLS[tool]
    assert freetext.assign(text, t, params.split(","), fill(text, t)) == expected


def test_a_time_said_is_no_quantity_and_a_price_is_not_a_time() -> None:
    stock = TOOLS["bakery.record_stock"]
    got = fill("we baked six cinnamon buns for tuesday at quarter past ten", stock)
    assert got.get("quantity") == 6, got
    # in or out? not said: the change is asked for, never guessed (a wrong call is worse)
    assert "quantity" not in fill("anna wants six cinnamon buns for tuesday", stock)
    price = TOOLS["bakery.set_price"]
    assert fill("the croissants are 2.50", price).get("euros") == 2.5


def test_a_catalogue_item_loses_its_article() -> None:
    price = TOOLS["bakery.set_price"]
    text = "set the price of the sourdough loaf to 4.50"
    assert freetext.span(text, price, "item", fill(text, price)) == "sourdough loaf"
    lend = TOOLS["library.lend_book"]  # a title keeps its own: "The Hobbit"
    assert freetext.assign("lend The Hobbit to Sarah Jones", lend, ["member", "title"],
                           {})["title"] == "The Hobbit"


ODD = '''
from typing import Annotated, Literal, Optional
from msgspec import Meta

def f(level: Annotated[int, Meta(ge=5, le=5)], codes: list[str], mode: Literal[1, 2, 3],
      maybe: Optional[float] = None, flag: bool = False, opts: dict = {}) -> dict:
    return {}
'''
ODD_DOC = ("True True True false FALSE 0 is 100 is (((( 1 = 2 = 3 = in in in " + "x" * 50000 +
           "\n\n    Args:\n        level: 5 is fully 5 is fully 5 is ( ( ( 0 (silent) to 10"
           " (loudest)\n        flag: True False True False instead of on rather than off\n"
           "        maybe: in °C in °F in bar (minutes) HH:MM Tuesday 09:30 empty clears\n")


@pytest.mark.timeout(60)
def test_rules_survive_odd_plugins() -> None:
    """A plugin with odd schemas and a hostile docstring: knowledge, the implied requests,
    the rules and the reply all work (or leave things open); nothing raises."""
    ns: dict[str, object] = {}
    exec(ODD, ns)  # noqa: S102 - a plugin function of the test
    ns["f"].__doc__ = ODD_DOC  # type: ignore[union-attr]
    tool = make_tool(ns["f"], name="odd.f")  # type: ignore[arg-type]
    info = knowledge.of(tool)
    assert set(info.params) == {"level", "codes", "mode", "maybe", "flag", "opts"}
    assert all(isinstance(u, str) for u in knowledge.utterances(tool))
    for text in ["set level 5 mode 2 with flag", "turn it off", "codes abc", "", "5 5 5 5"]:
        got = fill(text, tool)
        assert set(got) <= set(info.params), got
        freetext.span(text, tool, "codes", got)
        freetext.assign(text, tool, ["codes"], got)
    call = ToolCall(tool="odd.f", arguments={"level": 5}, result={"nested": {"a": [1, 2]}})
    assert phrasing.render([call], {"odd.f": tool})


# -- names, shapes and the calibration for wrong calls (this issue's second pass) ---------

@pytest.mark.parametrize(("tool", "params", "text", "expected"), [
    # a person after to/for/from, stopping at numbers, days and punctuation
    ("bakery.take_order", "customer,items",
     "um order for lucy twelve croissants and a baguette pick up sunday at eight",
     {"customer": "lucy", "items": "twelve croissants and a baguette"}),
    ("bakery.take_order", "customer,items",
     "Take an order: Pat Murphy, 2 apple tarts, Thursday 5pm",
     {"customer": "Pat Murphy", "items": "2 apple tarts"}),
    ("bakery.take_order", "customer,items",
     "order four ahmed two baguettes pick up friday half past three",
     {"customer": "ahmed", "items": "two baguettes"}),
    # after the parameter's own word
    ("vet.book_visit", "owner,pet", "Dental for Oscar with Dr Okoye - owner: Kwame Mensah",
     {"owner": "Kwame Mensah", "pet": "Oscar"}),
])
def test_names_stand_where_a_person_is_said(tool: str, params: str, text: str,
                                            expected: dict) -> None:
    t = TOOLS[tool]
    got = freetext.assign(text, t, params.split(","), fill(text, t))
    assert {k: got.get(k) for k in expected} == expected


@pytest.mark.parametrize(("tool", "param", "text", "expected"), [
    ("vet.mark_arrived", "pet", "Check in Pumpkin please", "Pumpkin"),
    ("vet.cancel_visit", "pet", "Cancel Max's appointment, please.", "Max"),
    ("vet.call_staff", "message", "Tell Dr Okoye her 3 o'clock is here.", "her 3 o'clock is here"),
    ("vet.call_staff", "message", "okay so ping nurse kim and ask her to bring the scales",
     "bring the scales"),
    ("vet.set_reception_screen", "message",
     "Put \"Please take a seat, we'll call you shortly\" on the screen.",
     "Please take a seat, we'll call you shortly"),
    ("bakery.announce", "message",
     "Let everyone in the shop know the gluten-free bread has arrived",
     "the gluten-free bread has arrived"),
    ("bakery.put_on_offer", "item", "30 percent off all muffins", "muffins"),
    ("bakery.record_stock", "item", "we baked thirty cinnamon buns this morning",
     "cinnamon buns"),
])
def test_values_are_cut_where_the_request_says_something_else(tool: str, param: str,
                                                              text: str, expected: str) -> None:
    t = TOOLS[tool]
    assert freetext.span(text, t, param, fill(text, t)) == expected


def test_a_message_loses_the_clause_that_made_it_urgent() -> None:
    page = TOOLS["library.page_colleague"]
    text = "Message Aoife, it's an emergency, water is leaking in the basement archive"
    got = freetext.fill_texts(text, page, ["colleague", "message"], fill(text, page))
    assert got == {"colleague": "Aoife", "message": "water is leaking in the basement archive"}


@pytest.mark.parametrize(("tool", "param", "value", "ok"), [
    ("library.return_book", "title", "Jones brought", False),  # cut out of a clause
    ("library.check_shelf", "title", "the gruffalo checked out or", False),  # dangling
    ("library.lend_book", "member", "Ruby Patel, due back", False),  # no clause in a name
    ("library.lend_book", "member", "kill a mockingbird two emma white", False),
    ("bakery.put_on_offer", "item", "the last hour", False),  # when, not what
    ("bakery.set_price", "item", "turn the oven", False),  # a command, not an item
    ("library.lend_book", "member", "Mrs Okafor", True),
    ("library.lend_book", "title", "To Kill a Mockingbird", True),
    ("vet.set_reception_screen", "message", "we are closed, sorry", True),
])
def test_a_value_must_have_the_shape_of_what_it_holds(tool: str, param: str, value: str,
                                                      ok: bool) -> None:
    assert freetext.plausible(TOOLS[tool], param, value, {}) is ok


def test_a_number_before_what_it_counts_is_never_a_percentage_price_or_temperature() -> None:
    assert "percent_off" not in fill("Add 40 baguettes to stock", TOOLS["bakery.put_on_offer"])
    assert "euros" not in fill("three sourdough loaves", TOOLS["bakery.set_price"])
    assert fill("Put the croissants on offer at 20% off",
                TOOLS["bakery.put_on_offer"])["percent_off"] == 20
    # a price is no level: "off" says nothing about it
    assert "euros" not in fill("brownies ten percent off", TOOLS["bakery.set_price"])
    assert knowledge.of(TOOLS["bakery.put_on_offer"]).params["percent_off"].currency is False


def test_a_string_described_as_a_day_and_time_is_a_time() -> None:
    cancel = TOOLS["vet.cancel_visit"]
    assert knowledge.of(cancel).params["when"].time_of_day
    assert fill("cancel rocky for tomorrow at noon", cancel)["when"].lower() == "tomorrow 12:00"


@pytest.fixture(scope="module")
def embed():
    from edged.models.embed import create_embedder

    emb = create_embedder("bundled:minilm-l6-int8")
    emb.load()

    async def run(texts: list[str]) -> list[list[float]]:
        return emb.embed(texts)

    return run


async def _planner(embed, plugin: str):
    from edged.agents.assemble import tool_index
    from edged.agents.planner import Planner

    tools = {n: t for n, t in TOOLS.items() if n.startswith(plugin + ".")}
    return Planner(tools, await tool_index(list(tools.values()), embed), pool=None,
                   model=None)


@pytest.mark.parametrize(("plugin", "text", "tool", "args"), [
    # names and titles drown the sentence; a word only one tool is known by still says it
    ("library", "Sarah Jones brought back The Hobbit", "library.return_book",
     {"title": "The Hobbit", "member": "Sarah Jones"}),
    # the best match cannot be filled; a close tool whose every argument is said can
    ("bakery", "Oven off please", "bakery.switch_oven", {"on": False}),
    # a percentage rules out a tool with nowhere to put it
    ("bakery", "30 percent off all muffins", "bakery.put_on_offer",
     {"item": "muffins", "percent_off": 30}),
])
async def test_the_planner_picks_by_what_the_request_names_and_says(embed, plugin: str,
                                                                    text: str, tool: str,
                                                                    args: dict) -> None:
    planner = await _planner(embed, plugin)
    [(_, picked, planned, _)] = await planner.plan(text)
    got = planned if planned is not None else await planner.model_args(text, picked)
    assert picked.name == tool and got == args, (picked.name, got)


@pytest.mark.parametrize(("plugin", "text"), [
    ("bakery", "Knock a quarter off the carrot cake"),  # never switches the oven off
    ("library", "How much is the late fee for a book that's a week overdue?"),
    ("vet", "Could you let Nurse Kim know the vaccine delivery has arrived?"),
])
async def test_no_wrong_call_where_the_rules_are_unsure(embed, plugin: str, text: str) -> None:
    """Asking is fine; running a wrong call is not (the pet is no member of staff, a
    question lends nothing, a discount does not switch the oven off)."""
    planner = await _planner(embed, plugin)
    steps = await planner.plan(text)
    for _, tool, planned, _ in steps:
        got = planned if planned is not None else await planner.model_args(text, tool)
        assert isinstance(got, str) or tool.name in ("vet.call_staff",
                                                     "bakery.put_on_offer"), (tool.name, got)


async def test_a_choice_named_by_another_word_is_taken_by_meaning(embed) -> None:
    """"a flu jab" is the choice "vaccination"; a name or a time names no choice."""
    from edged.agents.meaning import ChoiceMeaning

    meaning = ChoiceMeaning(embed)
    book = TOOLS["vet.book_visit"]
    assert await meaning.choose("teeth cleaning for ziggy", book, "reason", {}) == "dental"
    assert await meaning.choose("book a flu jab for coco", book, "reason", {}) == "vaccination"
    assert await meaning.choose("book biscuit in tomorrow at ten", book, "reason",
                                {"pet": "biscuit"}) is None
    args = {"pet": "Daisy", "owner": "Olga Petrova", "vet": "groomer", "when": "Friday 10:00"}
    got = await meaning.complete("nail trim and bath for Daisy", book, args)
    assert got == {**args, "reason": "grooming"}
    # a value the schema refuses keeps the default: arguments missing, nothing added
    assert await meaning.complete("nail trim and bath", book, {"pet": "Daisy"}) == \
        {"pet": "Daisy"}


def test_british_half_nine_and_an_unsaid_direction() -> None:
    assert find_time("pickup Saturday at half nine").hour == 9
    assert find_time("pickup Saturday at half nine").minute == 30
    from edged.agents.fill import direction_unsaid

    quantity = knowledge.of(TOOLS["bakery.record_stock"]).params["quantity"]
    assert direction_unsaid("anna wants six cinnamon buns", quantity)
    assert not direction_unsaid("we sold six cinnamon buns", quantity)


@pytest.mark.parametrize(("tool", "params", "text", "expected"), [
    ("vet.book_visit", "owner,pet",
     "okay so book uh biscuit in four a vaccination with nurse kim owner is priya raman",
     {"owner": "priya raman", "pet": "biscuit"}),
    ("vet.book_visit", "owner,pet", "Can you book Aiko Tanaka's cat Miso in with Dr Moreau",
     {"owner": "Aiko Tanaka"}),
    ("library.lend_book", "member,title", "uh lend sapiens four david kim for 1 week",
     {"member": "david kim", "title": "sapiens"}),
    ("library.lend_book", "member,title", "Marta Kowalski is borrowing Wolf Hall",
     {"member": "Marta Kowalski", "title": "Wolf Hall"}),
])
def test_names_after_the_verb_a_possessive_or_a_misheard_for(tool: str, params: str,
                                                              text: str, expected: dict) -> None:
    t = TOOLS[tool]
    got = freetext.assign(text, t, params.split(","), fill(text, t))
    assert {k: got.get(k) for k in expected} == expected


def test_a_message_tool_never_texts_someone_it_cannot_reach() -> None:
    screen = TOOLS["vet.set_reception_screen"]
    text = "Text Mrs Hughes a reminder about Bonnie's appointment on Friday."
    assert isinstance(freetext.fill_texts(text, screen, ["message"], {}), str)
    ok = "Screen message: Card payments only today."
    assert freetext.fill_texts(ok, screen, ["message"], {}) == \
        {"message": "Card payments only today"}


def test_names_messages_and_shapes_survive_hostile_requests() -> None:
    """The name, message and shape rules over very long, punctuation-only, possessive-only
    and filler-only requests: no exception, strings or a question."""
    cases = [("vet.book_visit", ["owner", "pet"]), ("library.lend_book", ["member", "title"]),
             ("vet.call_staff", ["message"]), ("pharmacy.start_promotion", ["product"])]
    # (the agent hands the rules at most COMMAND_MAX_CHARS; these go well past it)
    texts = ["for " * 500, "'s " * 600, "Mr " * 600, ": " * 900, "- " * 900,
             "uh " * 600, "four " * 400 + "x", "\"" * 2000, "owner is " * 250,
             "tell " * 400, "😀's 😀 " * 300, "A" * 5000]
    for name, params in cases:
        tool = TOOLS[name]
        for text in texts:
            got = freetext.fill_texts(text, tool, params, fill(text, tool))
            assert isinstance(got, str) or all(isinstance(v, str) for v in got.values()), got
            assert isinstance(freetext.assign(text, tool, params, {}), dict)


@pytest.mark.parametrize(("payload", "stream"), [
    (b'{"text": "tell me about cats", "stream": true}', True),
    (b'{"text": "tell me about cats"}', False),
    (b"tell me about cats", False),
])
def test_a_request_asks_for_streaming_with_a_boolean(payload: bytes, stream: bool) -> None:
    from edged.messages import parse

    env, _ = parse(payload, max_bytes=1024)
    assert bool(env and env.stream) is stream


@pytest.mark.parametrize("payload", [b'{"text": "x", "stream": "yes"}',
                                     b'{"text": "x", "stream": 1}',
                                     b'{"text": "x", "stream": {"a": 1}}'])
def test_a_broken_stream_field_is_a_clear_error(payload: bytes) -> None:
    from edged.messages import BadRequest, parse

    with pytest.raises(BadRequest) as e:
        parse(payload, max_bytes=1024)
    assert e.value.code == "bad_request" and "stream" in e.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ("Customer's on the line, account number is 55 18 09", ["551809"]),  # groups read out
    ("look up order number three three one four four oh two", ["3314402"]),
    ("the long line test on eight eight oh for one six", ["880416"]),  # "for": a four
    ("What's the status of order SO-44817?", ["SO-44817"]),
    ("Put ticket #3301 on hold", ["3301"]),
    # quantities, prices, times and dates are no identifiers
    ("Log a payment from Niamh Kelly: 300 euro, bank transfer.", []),
    ("Refund 12.50 to the card, 15 minutes from now, at 08:45 on the 14th, by 2pm", []),
    ("three apples and two pears", []),  # fewer than three digits said
])
def test_identifiers_said_written_grouped_or_digit_by_digit(text: str, expected: list) -> None:
    from edged.agents import codes

    assert [c.value for c in codes.find(text)] == expected


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # an account number is the identifier said, and its digits are no amount
    ("helpdesk.issue_credit", "Credit account 402138 €20 for the outage",
     {"account": "402138", "amount": 20}),
    ("helpdesk.lookup", "can you bring up account nine one two zero zero seven",
     {"number": "912007"}),
    # "order 7731906" beside "for me": never "you find"
    ("helpdesk.lookup", "Can you find order 7731906 for me?",
     {"number": "7731906", "kind": "order"}),
    # a choice holding a number, said in words; a choice named by its last word alone
    ("gym.set_court_lights", "turn off the lights on court three",
     {"area": "court 3", "lit": False}),  # a bare "on" after the verb is a preposition
    ("gym.set_court_lights", "Darken court two.", {"area": "court 2", "lit": False}),
    ("gym.set_court_lights", "the hall is pitch dark can you put the lights on",
     {"area": "sports hall", "lit": True}),
    # "lights" names the thing here, it does not switch them on
    ("gym.set_court_lights", "Kill the sports hall lights, the five-a-side lot have gone home",
     {"area": "sports hall", "lit": False}),
    # a price said as two pairs of digits
    ("pharmacy.set_shelf_price", "lip balm is forty nine ninety nine now",
     {"price": 49.99}),
])
def test_identifiers_choices_and_prices_said_in_words(tool: str, text: str,
                                                      expected: dict) -> None:
    got = fill(text, TOOLS[tool])
    assert {k: got.get(k) for k in expected} == expected, got


def test_an_identifier_never_comes_from_other_words() -> None:
    """No account number said: the account is asked for, not filled with a name."""
    from edged.agents.arguments import Arguments

    tools = {n: t for n, t in TOOLS.items() if n.startswith("helpdesk.")}
    args = Arguments(tools, pool=None, model=None)
    tool = TOOLS["helpdesk.restart_router"]
    assert "account" not in fill("Restart the router for Mrs Kowalski", tool)
    assert args.complete_args("Restart the router for Mrs Kowalski", tool) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("Book an engineer for account 402138 on Thursday morning", "Thursday morning"),
    ("Send a technician to 730914 tomorrow at 10am, block two hours", "tomorrow at 10am"),
    ("needs someone out on the 14th of March at 2pm, it's a big job", "14th of March at 2pm"),
    ("the customer wants a technician saturday at nine account number 313370",
     "saturday at nine"),
    ("book a tech visit for 552081 next monday after noon", "next monday afternoon"),
])
def test_a_when_in_the_users_words(text: str, expected: str) -> None:
    """A string described as "When the customer wants the visit" holds the words that say
    when; the hours said there are no duration."""
    got = fill(text, TOOLS["helpdesk.book_technician"])
    assert got["slot"] == expected
    assert got.get("duration_hours") in (None, 2.0)


@pytest.mark.parametrize(("text", "summary"), [
    ("Open a ticket for 402138: no internet since Monday, priority high",
     "no internet since Monday"),  # the last clause says the priority, not the problem
    ("Raise a normal priority ticket for 119034 - billing address needs updating",
     "billing address needs updating"),
])
def test_a_summary_set_off_by_a_colon_or_a_dash(text: str, summary: str) -> None:
    tool = TOOLS["helpdesk.open_ticket"]
    known = fill(text, tool)
    assert freetext.fill_texts(text, tool, ["summary"], known) == {"summary": summary}


@pytest.mark.parametrize(("plugin", "text", "tool", "args"), [
    # an everyday availability question names the lookup of what is left
    ("pharmacy", "do we still have any teething gel", "pharmacy.stock_level",
     {"product": "teething gel"}),
    # an account number said, and the credit's amount beside it
    ("helpdesk", "Credit account 402138 €20 for the outage", "helpdesk.issue_credit",
     {"account": "402138", "amount": 20, "reason": "outage"}),
])
async def test_the_planner_with_everyday_phrasings(embed, plugin: str, text: str, tool: str,
                                                   args: dict) -> None:
    planner = await _planner(embed, plugin)
    [(_, picked, planned, _)] = await planner.plan(text)
    got = planned if planned is not None else await planner.model_args(text, picked)
    assert isinstance(got, dict)
    got = await planner.meaning.complete(text, picked, got)
    assert picked.name == tool and got == args, (picked.name, got)


@pytest.mark.parametrize(("tool", "text", "param", "expected"), [
    # a number labelled as another thing is not this parameter's ("ticket 3198")
    ("helpdesk.open_ticket", "Ticket 3198 is waiting on the customer now", "account", None),
    ("helpdesk.restart_router", "She's asking where the router from order 8120455 has got to",
     "account", None),
    ("helpdesk.restart_router", "Restart 559018's router in 15 minutes", "account", "559018"),
    ("helpdesk.restart_router", "restart the rooter on account three four five one two two "
     "in half an hour", "account", "345122"),  # "in" is no inch here
    ("helpdesk.lookup", "She's asking where the router from order 8120455 has got to",
     "number", "8120455"),
])
def test_an_identifier_labelled_as_another_thing(tool: str, text: str, param: str,
                                                 expected: str | None) -> None:
    assert fill(text, TOOLS[tool]).get(param) == expected


@pytest.mark.parametrize(("tool", "param", "value"), [
    ("gym.book_class", "member", "everyone"),  # "tell everyone ...": nobody to book
    ("helpdesk.open_ticket", "summary", "Customer"),  # one word the tool is described by
])
def test_implausible_values_are_asked_for(tool: str, param: str, value: str) -> None:
    assert not freetext.plausible(TOOLS[tool], param, value, {})


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # the animal after "his cat", "her rabbit" is the pet; a titled person never is
    ("vet.mark_arrived", "Mr Yilmaz and his cat Karamel have arrived.", {"pet": "Karamel"}),
    ("vet.cancel_visit", "Mrs Novak rang - Peanut can't make tomorrow at 11:30, please cancel it.",
     None),
])
def test_a_pet_is_the_animal_not_its_owner(tool: str, text: str, expected: dict | None) -> None:
    from edged.agents.arguments import Arguments

    tools = {n: t for n, t in TOOLS.items() if n.startswith("vet.")}
    got = Arguments(tools, pool=None, model=None).complete_args(text, TOOLS[tool])
    if expected is None:
        assert got is None or got.get("pet") != "Mrs Novak"
    else:
        assert got is not None and {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # a title without its author, the particle that carried it, or the clause after it
    ("library.lend_book", "Lend Educated by Tara Westover to Liam Byrne for a fortnight",
     {"title": "Educated", "member": "Liam Byrne"}),
    ("library.lend_book", "Grace O'Neill wants to take Atomic Habits home, seven days please",
     {"title": "Atomic Habits", "member": "Grace O'Neill"}),
    # "the cover is ripped": the title ends at "and"; ripped is damaged
    ("library.return_book", "peter returned the road and the cover is ripped",
     {"title": "the road", "member": "peter", "damaged": True}),
])
def test_titles_are_cut_where_the_sentence_goes_on(tool: str, text: str, expected: dict) -> None:
    from edged.agents.arguments import Arguments

    tools = {n: t for n, t in TOOLS.items() if n.startswith("library.")}
    got = Arguments(tools, pool=None, model=None).complete_args(text, TOOLS[tool])
    assert got is not None and {k: got.get(k) for k in expected} == expected, got


def test_a_yes_no_described_by_examples_in_brackets() -> None:
    """"True when the book came back damaged (torn, stained, wet, missing pages)"."""
    yes = knowledge.of(TOOLS["library.return_book"]).params["damaged"].true_words
    assert {"torn", "stained", "wet", "missing pages"} <= yes


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # dates as the description writes them; "two" at a practice is in the afternoon
    ("dental.book_appointment", "can we book a whitening for lucy nguyen with doctor byrne "
     "on the third of june at two pm", {"starts_at": "3 June 14:00"}),
    ("dental.book_appointment", "put siobhan down with the hygienist thursday at quarter "
     "past two", {"starts_at": "Thursday 14:15"}),
    ("dental.reschedule", "Could you reschedule Priya Sharma's appointment to the 12th of "
     "April at ten to eleven?", {"new_start": "12 April 10:50"}),
    # when it is now and when it should be, each its own
    ("dental.reschedule", "Move Mrs Patel from Tuesday 10:30 to Thursday 10:30.",
     {"new_start": "Thursday 10:30", "currently": "Tuesday 10:30"}),
    ("dental.reschedule", "Rebook her for tomorrow 08:30 instead of Thursday.",
     {"new_start": "Tomorrow 08:30", "currently": "Thursday"}),
    ("dental.reschedule", "can you move liam o sullivan to friday at quarter to nine",
     {"new_start": "Friday 08:45", "currently": None}),
    # a day alone where the parameter allows one
    ("dental.cancel_appointment", "Mrs Patel rang, she can't make Tuesday, please cancel.",
     {"on": "Tuesday"}),
    ("dental.book_appointment", "book Mrs Lee in on Tuesday", {"starts_at": None}),
])
def test_appointments_days_and_times(tool: str, text: str, expected: dict) -> None:
    got = fill(text, TOOLS[tool])
    assert {k: got.get(k) for k in expected} == expected, got


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # a sign or a PA shows what is said as a message, not any sentence
    ("hardware.set_sign", "Somebody nicked two padlocks off the display", None),
    ("hardware.set_sign", "can you roll the front shutter up", None),
    ("hardware.set_sign", "make the led sign say closed for stocktake back tomorrow and "
     "have it scroll", {"text": "closed for stocktake back tomorrow", "scrolling": True}),
    ("hardware.set_sign", "uh blank the sign outside please", {"text": ""}),  # '"" blanks it'
    ("hardware.announce", "Let everyone know over the PA that we close at 1pm today",
     {"message": "we close at 1pm today"}),
    # a note-taker takes anything said
    ("notes.add_note", "we've run out of washing up liquid", {"text": "washing up liquid"}),
])
def test_messages_said_as_one(tool: str, text: str, expected: dict | None) -> None:
    from edged.agents.arguments import Arguments

    plugin = tool.split(".")[0]
    tools = {n: t for n, t in TOOLS.items() if n.startswith(plugin + ".")}
    got = Arguments(tools, pool=None, model=None).complete_args(text, TOOLS[tool])
    if expected is None:
        assert got is None
    else:
        assert got is not None and {k: got.get(k) for k in expected} == expected, got


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # an article's name: no person, no count or container, no question words
    ("hardware.put_on_sale", "Let's knock the Stanley tape measures down by 10 percent until "
     "Saturday, please", {"sku_or_name": "Stanley tape measures", "percent_off": 10,
                          "until": "Saturday"}),
    ("hardware.stock_level", "how many bags of compost are left out in the garden centre",
     {"what": "compost", "location": "garden centre"}),
    ("hardware.stock_level", "Have we got any WD-40 left?", {"what": "WD-40"}),
    ("pharmacy.stock_level", "What's the price of the Voltarol gel?",
     {"product": "Voltarol gel"}),
    # a label's code is no quantity; a price is no time
    ("hardware.put_on_sale", "Mark down HW-20418 to €12.50",
     {"sku_or_name": "HW-20418", "sale_price": 12.5, "until": None}),
    ("hardware.put_on_sale", "Half price on the solar fence lights, ends 31 August",
     {"until": "31 August"}),
])
def test_articles_codes_and_sale_ends(tool: str, text: str, expected: dict) -> None:
    from edged.agents.arguments import Arguments

    plugin = tool.split(".")[0]
    tools = {n: t for n, t in TOOLS.items() if n.startswith(plugin + ".")}
    got = Arguments(tools, pool=None, model=None).complete_args(text, TOOLS[tool])
    assert got is not None
    assert {k: (got.get(k).lower() if isinstance(got.get(k), str) else got.get(k))
            for k in expected} == {k: v.lower() if isinstance(v, str) else v
                                   for k, v in expected.items()}, got


@pytest.mark.parametrize(("tool", "param", "value"), [
    ("dental.cancel_appointment", "who", "It"),  # "It's Agnieszka Nowak": no name
    ("dental.reschedule", "patient", "Rebook Gráinne"),  # the command, not a name
])
def test_pronouns_and_commands_are_no_names(tool: str, param: str, value: str) -> None:
    assert not freetext.plausible(TOOLS[tool], param, value, {})


def test_a_name_loses_a_dash_after_it() -> None:
    tool = TOOLS["dental.book_appointment"]
    text = ("New patient, Tomasz Wiśniewski — needs a filling with Dr Nakamura, 14 March "
            "09:15, give it 45 minutes.")
    known = fill(text, tool)
    assert known["starts_at"] == "14 March 09:15" and known["duration_min"] == 45
    assert freetext.fill_texts(text, tool, ["patient_name"], known) == {
        "patient_name": "Tomasz Wiśniewski"}


def test_quoted_words_are_the_message_not_a_choice() -> None:
    """"switch off" inside the notice never picks the screen's "off" mode."""
    got = fill("Show 'Please switch off your mobile phones' on the waiting-room TV.",
               TOOLS["dental.waiting_room_display"])
    assert got.get("mode") != "off"


@pytest.mark.parametrize(("plugin", "text", "tool", "args"), [
    # "is here", "just walked in": an arrival, checked in
    ("vet", "Nala is here for her booster.", "vet.mark_arrived", {"pet": "Nala"}),
    ("dental", "the little boy for doctor osei is here his name is oliver wright",
     "dental.check_in", {"who": "oliver wright"}),
])
async def test_arrivals_said_in_everyday_words(embed, plugin: str, text: str, tool: str,
                                               args: dict) -> None:
    planner = await _planner(embed, plugin)
    [(_, picked, planned, _)] = await planner.plan(text)
    assert picked.name == tool and isinstance(planned, dict)
    assert {k: planned.get(k) for k in args} == args


async def test_never_turned_up_is_no_arrival(embed) -> None:
    planner = await _planner(embed, "dental")
    steps = await planner.plan("Kenji Watanabe never turned up for his 3:30 today, take it "
                               "off as a DNA.")
    assert not steps or steps[0][1].name != "dental.check_in"


@pytest.mark.parametrize(("text", "article"), [
    ("End the sale on the Bosch cordless drills", "Bosch cordless drills"),
    ("um can you end the offer on the terracotta pots", "terracotta pots"),
    ("Stop the discount on HW-20418", "HW-20418"),
    ("End all the sales", None),  # no article named: every sale, as the tool says
])
def test_an_optional_article_is_filled_when_named(text: str, article: str | None) -> None:
    """Leaving it out ends every sale: an article named must never be dropped."""
    assert fill(text, TOOLS["hardware.end_sale"]).get("article") == article


@pytest.mark.parametrize(("tool", "text", "param", "expected"), [
    ("dental.book_appointment", "Could Dr Osei see Kwabena Asante-Mensah on Friday at 4pm? "
     "It's a root canal.", "patient_name", "Kwabena Asante-Mensah"),
    ("dental.reschedule", "can you move liam o sullivan to friday at quarter to nine",
     "patient", "liam o'sullivan"),  # said "o sullivan": O'Sullivan
])
def test_names_as_written(tool: str, text: str, param: str, expected: str) -> None:
    t = TOOLS[tool]
    got = freetext.fill_texts(text, t, [param], fill(text, t))
    assert isinstance(got, dict) and got[param] == expected, got


async def test_a_quoted_message_names_no_choice_by_meaning(embed) -> None:
    from edged.agents.meaning import ChoiceMeaning

    meaning = ChoiceMeaning(embed)
    tool = TOOLS["dental.waiting_room_display"]
    got = await meaning.choose("Show 'Please switch off your mobile phones' on the TV.",
                               tool, "mode", {})
    assert got != "off"


def test_banknotes_and_numbers_labelled_as_another_thing() -> None:
    assert fill("give them a tenner in credit on 845520",
                TOOLS["helpdesk.issue_credit"]).get("amount") == 10
    status = TOOLS["helpdesk.set_ticket_status"]
    # the customer's number is no ticket number; "order for 118" still names room 118
    assert "ticket" not in fill("Can you move the customer on 402138 to the 1 gig package?",
                                status)
    assert fill("room service order for 118, a pot of tea",
                TOOLS["hotel.order_room_service"])["room"] == 118


def test_money_and_identifiers_are_never_carried_over_by_a_pronoun() -> None:
    from edged.agents.recollect import _free_text

    credit = TOOLS["helpdesk.issue_credit"]
    assert _free_text(credit, "amount") and _free_text(credit, "account")
    assert not _free_text(TOOLS["home.set_light"], "brightness")


@pytest.mark.parametrize(("text", "item"), [
    ("Book in 12.5 kg of 50mm round nails", "50mm round nails"),  # the size is the thing's
])
def test_a_size_written_onto_its_thing_stays(text: str, item: str) -> None:
    tool = TOOLS["hardware.adjust_stock"]
    got = freetext.fill_texts(text, tool, ["item"], fill(text, tool))
    assert isinstance(got, dict) and got.get("item") == item, got


@pytest.mark.parametrize(("text", "expected"), [
    # "+n books stock in, -n books it out": signed; its direction from the verbs
    ("Five of the 13A plugs came in smashed, write them off",
     {"change": -5, "item": "13A plugs"}),  # the size is the plugs'; five of them
    ("Minus 3 on the garden kneelers, we miscounted", {"change": -3, "item": "garden kneelers"}),
    ("Book in 12.5 kg of 50mm round nails", {"change": 12.5, "unit": "kilos",
                                             "item": "50mm round nails"}),
    ("Somebody nicked two padlocks off the display", {"change": -2}),
])
def test_stock_changes_in_a_shop(text: str, expected: dict) -> None:
    from edged.agents.arguments import Arguments

    tools = {n: t for n, t in TOOLS.items() if n.startswith("hardware.")}
    tool = TOOLS["hardware.adjust_stock"]
    got = Arguments(tools, pool=None, model=None).complete_args(text, tool) or fill(text, tool)
    assert {k: got.get(k) for k in expected} == expected, got


@pytest.mark.parametrize(("tool", "text", "member"), [
    ("gym.check_in", "uh checking in rob fitzgerald no guests", "rob fitzgerald"),
    ("gym.record_payment", "Log a payment from Niamh Kelly: 300 euro, bank transfer.",
     "Niamh Kelly"),  # the name before the colon, the amount after it
    ("gym.record_payment", "tom byrne payed sixty euro in cash", "tom byrne"),
])
def test_members_named_around_the_command(tool: str, text: str, member: str) -> None:
    t = TOOLS[tool]
    got = freetext.fill_texts(text, t, ["member"], fill(text, t))
    assert isinstance(got, dict) and got["member"] == member, got


@pytest.mark.parametrize(("tool", "text", "expected"), [
    # a number plate in two groups; a size onto a thing that is a quantity's unit
    ("garage.job_done", "KX19 LMN is done, ready for collection", {"plate": "KX19 LMN"}),
    ("garage.move_lift", "Raise bay 3 to 1200mm please", {"bay": "bay 3", "height_mm": 1200}),
    # a unit choice's quantity before a bare number in the thing's name
    ("garage.order_part", "Order two litres of DOT 4 brake fluid",
     {"quantity": 2, "unit": "litres"}),
    # the command in the first sentence; what follows describes
    ("garage.switch_equipment", "Could you switch the parts washer off please? It's been "
     "left running all weekend.", {"unit": "parts washer", "running": False}),
    # "down to a quarter" is a quarter open
    ("garage.set_roller_door", "can you bring the main door down to about a quarter",
     {"open_pct": 25}),
])
def test_workshop_plates_sizes_and_directions(tool: str, text: str, expected: dict) -> None:
    got = fill(text, TOOLS[tool])
    assert {k: got.get(k) for k in expected} == expected, got


@pytest.mark.parametrize(("tool", "text", "expected"), [
    ("garage.move_lift", "lift two up", {"bay": "bay 2", "travel": "up"}),
    # a number beside no lift names no bay ("Urgent one: cam belt kit")
    ("garage.move_lift", "Urgent one: cam belt kit for the Transit", {"bay": None}),
    ("garage.set_heater", "Heater to 21 until further notice.", {"celsius": 21}),
    ("garage.job_done", "WP15 OZS ready to go. Note for the customer: air con regassed, "
     "no leaks found.", {"note": "air con regassed, no leaks found"}),
])
def test_numbered_choices_counts_and_notes(tool: str, text: str, expected: dict) -> None:
    got = fill(text, TOOLS[tool])
    assert {k: got.get(k) for k in expected} == expected, got


def test_job_labels_stand_for_one_another() -> None:
    """"order 42" for a ticket number; an account's number is still no ticket's."""
    call = TOOLS["takeaway.call_order"]
    assert fill("Order 42's up", call)["ticket_no"] == 42
    assert "ticket" not in fill("the customer on 402138 wants the 1 gig package",
                                TOOLS["helpdesk.set_ticket_status"])


def test_a_plate_and_a_phone_in_one_booking() -> None:
    """The plate by the shape of the description's example ("AB12 CDE"), the phone by its
    groups; a heading ("New booking:") labels nothing."""
    got = fill("New booking: LF70 BXA, timing belt, 14 March 08:00, customer on 07700 900123.",
               TOOLS["garage.book_in"])
    assert got["registration"] == "LF70 BXA" and got["customer_phone"] == "07700900123"
    assert got["when"] == "14 March 08:00" and got["job"] == "timing belt"
    assert fill("Interim service for sn23 vua, tuesday 1pm",
                TOOLS["garage.book_in"])["registration"] == "sn23 vua"


def test_twice_is_two_and_a_count_is_no_part_of_a_thing() -> None:
    assert fill("Ticket 88 ready for collection, say it twice",
                TOOLS["takeaway.call_order"]) == {"ticket_no": 88, "repeat": 2}
    tool = TOOLS["takeaway.portions_left"]
    text = "Check the garlic bread count"
    assert freetext.fill_texts(text, tool, ["item"], fill(text, tool)) == {
        "item": "garlic bread"}


@pytest.mark.parametrize(("plugin", "text", "tool"), [
    # "tell X ...", "ping X ...": the one tool that can address someone, even when the
    # message says "is here" or names a pet
    ("vet", "uh tell the groomer that lolas owner is here too collect her", "vet.call_staff"),
    ("vet", "okay so ping nurse kim and ask her to bring the scales to room two",
     "vet.call_staff"),
])
async def test_an_addressed_request_goes_to_the_tool_that_addresses(embed, plugin: str,
                                                                    text: str,
                                                                    tool: str) -> None:
    planner = await _planner(embed, plugin)
    [(_, picked, _, _)] = await planner.plan(text)
    assert picked.name == tool
