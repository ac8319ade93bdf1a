"""The words each tool is known by, and the request's words: what tells tools apart when
names and titles drown a sentence ("Sarah Jones brought back The Hobbit": "back" is the
return tool's alone)."""

from __future__ import annotations

import re

from ..tools.base import Tool
from . import fill, knowledge, slots
from .selector import lead_word

# What a word only one tool is known by adds to its score (two such words at most).
OWN_WORD_BOOST = 0.08


class ToolWords:
    """One agent's tools and the words each is known by (computed once)."""

    def __init__(self, tools: dict[str, Tool]) -> None:
        self.tools = tools
        self._own: dict[str, set[str]] | None = None
        self._names: dict[str, set[str]] | None = None  # see name_only
        self._addressing: list[str] | None = None  # the tools that address someone
        self._domain: set[str] | None = None

    def boost(self, text: str) -> dict[str, float]:
        """A request full of names and titles ("Sarah Jones brought back The Hobbit") sits
        far from every tool's sentences; a word only one tool is known by ("back") still
        says which. Each such word said raises that tool's score."""
        said = said_stems(text)
        out: dict[str, float] = {}
        for name, own in self.own().items():
            hits = len(own & said)
            if hits:
                out[name] = OWN_WORD_BOOST * min(hits, 2)
        # "tell the hygienist ...", "ping nurse kim ...": the one tool that can address
        # someone
        if self._addressing is None:
            self._addressing = [n for n, t in self.tools.items() if knowledge.address_leads(t)]
        if len(self._addressing) == 1 and lead_word(re.sub(
                r"(?i)\b(?:so|right|well|alright)\b,?", " ", fill.mend(text))) in \
                knowledge.ADDRESS_VERBS:
            only_one = self._addressing[0]
            out[only_one] = out.get(only_one, 0.0) + 2 * OWN_WORD_BOOST
        # a word of the tool's name no other tool's name has ("price" in set_price beside
        # put_on_sale, whose parameter also says price)
        for name, only in self.name_only().items():
            if only & said and not self.own().get(name, set()) & only & said:
                out[name] = out.get(name, 0.0) + OWN_WORD_BOOST / 2
        return out

    def name_only(self) -> dict[str, set[str]]:
        """Each tool's name words (stems) that no other tool's name has, computed once."""
        if self._names is None:
            names = {n: {stem(w) for w in re.split(r"[._]", n.lower())[1:]} - STOP
                     for n in self.tools}
            self._names = {n: w - set().union(*(o for m, o in names.items() if m != n))
                           for n, w in names.items()}
        return self._names

    def domain(self) -> set[str]:
        """Words every tool of the agent is known by ("library" in a library's tools): they
        name the domain, not one tool."""
        if self._domain is None:
            vocab = [{stem(w) for w in vocabulary(t)} for t in self.tools.values()]
            self._domain = set.intersection(*vocab) if len(vocab) > 2 else set()
        return self._domain

    def own(self) -> dict[str, set[str]]:
        """Each tool's own words: the stems it is known by that no other tool is."""
        if self._own is None:
            vocab = {n: {stem(w) for w in known_by(t)} - FRAME_WORDS
                     for n, t in self.tools.items()}
            # a tool's name words count against the others even when they are common verbs
            # ("booking" in a reschedule's description is no word of its own beside
            # book_appointment)
            named = {n: v | {stem(w) for w in re.split(r"[._]", n.lower())}
                     for n, v in vocab.items()}
            self._own = {n: v - set().union(*(o for m, o in named.items() if m != n))
                         for n, v in vocab.items()}
        return self._own


STOP = {"the", "a", "an", "and", "or", "of", "to", "in", "on", "at", "for", "with", "from",
         "by", "it", "its", "is", "are", "be", "this", "that", "set", "get", "turn", "true",
         "false", "room"}


# words that frame any request, whatever the tool
FRAME_WORDS = set("""please can could would will shall should may might must you your yours our
ours my mine me not now all any some one new say said want wants need needs like just also then
than into onto up out off over about after before if whether them they their theirs these those
has have had having was were been being does did done first itself himself herself none known
right str int bool very more most much many such only own same other another each every both
either neither here there when where which while what who whom whose why how yes true false
let lets get got gets going come comes came again still already yet too well thing things
""".split())

COMMON_VERBS = {"turn", "turns", "switch", "switches", "make", "makes", "start", "starts",
                 "stop", "stops", "open", "opens", "close", "closes", "send", "sends", "book",
                 "books", "add", "adds", "put", "puts", "check", "checks", "tell", "tells",
                 "give", "gives", "take", "takes", "keep", "keeps", "show", "shows", "read",
                 "reads", "change", "changes", "how", "what", "when", "where", "which",
                 "your", "their", "there", "here"}


def stem(word: str) -> str:
    return re.sub(r"(?:ping|ing|ed|es|s)$", "", word) if len(word) > 4 else word


def vocabulary(tool: Tool) -> set[str]:
    """The words a tool is known by: its name's, its description's and its examples',
    with plurals."""
    words = set(re.split(r"[._]", tool.name.lower())) | set(slots.words(tool.description))
    for utterance, _ in tool.example_pairs():
        words |= set(slots.words(utterance))
    words = {w for w in words if len(w) > 2 and w not in STOP}
    return words | {w[:-1] for w in words if w.endswith("s")} | {w + "s" for w in words}



def said_stems(text: str) -> set[str]:
    """The request's word stems, each with its plain synonym ("borrowing" also says "lend"),
    and the plain words of an everyday phrase ("have we got any" asks what is left)."""
    said = fill.mend(text)
    stems = {stem(w) for w in slots.words(said)}
    # (only the command's own words: "tell the groomer that lola's owner is here" is no
    # arrival)
    command = re.split(r"(?i)\b(?:that|saying)\b|:", said, maxsplit=1)[0]
    if lead_word(said) not in knowledge.ADDRESS_VERBS:
        for rx, words in _PHRASE_OF:
            if rx.search(command):
                stems |= words
    return with_synonyms(stems)


# everyday phrasings and the plain words a tool's author would use for them
_PHRASE_OF: list[tuple[re.Pattern[str], set[str]]] = [
    (re.compile(r"(?i)\b(?:do|did) we (?:still )?have\b|\bhave we (?:still )?got\b|"
                r"\b(?:are|is) we out of\b|\bare we out\b|\bany (?:\w+ )*left\b|"
                r"\bin stock\b|\bhow many\b.*\bleft\b|\brun(?:ning)? out\b|"
                r"\bis there any\b|\bare there any\b"),
     {"left", "stock", "available", "availability", "level", "quantity"}),
    (re.compile(r"(?i)\b(?:is|are|'s) (?:here|in)\b(?! (?:the|a|an|my|our)\b)|"
                r"(?<!never )(?<!not )(?<!n't )(?:\bwalked in\b|\bturned up\b|\bshowed up\b)|"
                r"\bjust got here\b|"
                r"\bhas arrived\b|\bhave arrived\b|^arrived\b"),
     {"arriv", "arrive", "arrival", "check", "checkin"}),
    (re.compile(r"(?i)\bhow much (?:is|are|does|do)\b|"
                r"\bwhat(?:'s| is| does)\b.*\b(?:cost|price)\b"),
     {"price", "cost", "costs"}),
]


def with_synonyms(stems: set[str]) -> set[str]:
    return stems | {_VERB_OF[s] for s in stems if s in _VERB_OF}


# everyday verbs and the plainer verb they mean, as stems ("borrowing" -> "lend"); only
# verbs that mean one thing whatever the domain
_VERB_OF = {stem(k): stem(v) for k, v in {
    "borrow": "lend", "borrowing": "lend", "borrowed": "lend", "loan": "lend",
    "brought": "return", "returned": "return", "hold": "reserve", "reserved": "reserve",
    "scrap": "cancel", "scrapped": "cancel", "axe": "cancel", "cancelled": "cancel",
    "arrived": "arrive", "arrival": "arrive", "discount": "sale", "promotion": "sale",
    "markdown": "sale", "announcement": "announce", "broadcast": "announce", "ping": "page",
    "buzz": "page", "costs": "price", "cost": "price", "delivered": "delivery",
    "heating": "heat",
}.items()}


def known_by(tool: Tool) -> set[str]:
    """The words a tool's author used for what it does: its name, description, parameter
    names and descriptions, and its examples without their values ("Alice Carter")."""
    text = [tool.name.replace(".", " ").replace("_", " "), tool.description,
            *(f"{p.replace('_', ' ')} {d}" for p, d in tool.param_docs.items())]
    for utterance, args in tool.example_pairs():
        rest = utterance.lower()
        for v in (args or {}).values():
            rest = rest.replace(str(v).lower(), " ")
        text.append(rest)
    words = {w for t in text for w in slots.words(t)
             if len(w) > 2 and not w.isdigit()}
    numbers = set(slots._UNITS) | set(slots._TENS) | set(slots._SCALES)
    return words - STOP - COMMON_VERBS - FRAME_WORDS - numbers
