"""Redaction of what may leave the device (pure functions; no network)."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.redact import Redactor, is_sensitive

R = Redactor()

POSITIVE = [
    # e-mail
    ("mail anna@example.com now", "mail [email] now", "email"),
    ("write to first.last+tag@mail.example.co.uk.", "write to [email].", "email"),
    # phone numbers
    ("my number is +44 20 7946 0958", "my number is [phone]", "phone"),
    ("call +1 (555) 123-4567", "call [phone]", "phone"),
    ("call +44 (0)20 7946 0958 please", "call [phone] please", "phone"),
    ("whatsapp +4915112345678", "whatsapp [phone]", "phone"),
    ("call (555) 123-4567 today", "call [phone] today", "phone"),
    ("ring 0171 2345678", "ring [phone]", "phone"),
    ("call me at 020 7946 0958", "call me at [phone]", "phone"),
    ("call 555-123-4567 3 times", "call [phone] 3 times", "phone"),
    ("call 555.123.4567", "call [phone]", "phone"),
    ("call 1-800-555-1234", "call [phone]", "phone"),
    ("call 555-1234", "call [phone]", "phone"),
    ("appelle 06 12 34 56 78", "appelle [phone]", "phone"),
    ("on 23.11.2026 call 0171 2345678", "on 23.11.2026 call [phone]", "phone"),
    ('{"phone":"01712345678"}', '{"phone":"[phone]"}', "phone"),
    # cards (Luhn-valid) and IBANs (mod-97-valid)
    ("card 4111 1111 1111 1111", "card [card]", "card"),
    ("card 4111-1111-1111-1111 exp 12/27", "card [card] exp 12/27", "card"),
    ("amex 378282246310005", "amex [card]", "card"),
    ("amex 3782 822463 10005", "amex [card]", "card"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [iban]", "iban"),
    ("pay to GB82WEST12345698765432 today", "pay to [iban] today", "iban"),
    ("DE89 3704 0044 0532 0130 00 IS MINE", "[iban] IS MINE", "iban"),
    # keys and tokens
    ("key sk-abcdefghijklmnopqrstuv", "key [secret]", "secret"),
    ("key sk-proj-abc123def456ghi789jkl", "key [secret]", "secret"),
    ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[secret]", "secret"),
    ("slack xoxb-1234567890-abcdefghij", "slack [secret]", "secret"),
    ("aws AKIAIOSFODNN7EXAMPLE", "aws [secret]", "secret"),
    ("Authorization: Bearer abcdef123456789", "Authorization: Bearer [secret]", "secret"),
    ("token eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "token [secret]", "secret"),
    ("hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
     "hash [secret]", "secret"),
    ("aws secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws secret [secret]", "secret"),
    # the value after a secret word
    ("the wifi password is hunter2", "the wifi password is [secret]", "secret"),
    ("alarm code: 4471", "alarm code: [secret]", "secret"),
    ("my pin is 1234", "my pin is [secret]", "secret"),
    ("password=abc", "password=[secret]", "secret"),
    ("the wifi password: hunter2.", "the wifi password: [secret].", "secret"),
    ("set the door code to 4471", "set the door code to [secret]", "secret"),
    ("the garage code 8812 works", "the garage code [secret] works", "secret"),
    ('the password is "correct horse"', 'the password is "[secret]"', "secret"),
    ("MY_API_KEY=abc", "MY_API_KEY=[secret]", "secret"),
    ('{"password": "hunter2"}', '{"password": "[secret]"}', "secret"),
    # a qualifier and more linking words between the secret word and its value
    ("the code for the front door is 4471", "the code for the front door is [secret]",
     "secret"),
    ("password for the router is Tr0ub4dor&3", "password for the router is [secret]",
     "secret"),
    ("safe combination is 12-34-56", "safe combination is [secret]", "secret"),
    ("the gate code's 9911", "the gate code's [secret]", "secret"),
    ("the code equals 7788", "the code equals [secret]", "secret"),
    ("make the passcode to be 2468", "make the passcode to be [secret]", "secret"),
    ("the combination is 12 34 56 now", "the combination is [secret] now", "secret"),
    ("the passphrase is correct horse battery staple", "the passphrase is [secret]",
     "secret"),
    ('{"code": "4471"}', '{"code": "[secret]"}', "secret"),
    # IPv4
    ("server at 192.168.1.10", "server at [ip]", "ip"),
    ("proxy 10.0.0.1:8080", "proxy [ip]:8080", "ip"),
]


@pytest.mark.parametrize("text, want, kind", POSITIVE)
def test_patterns_are_replaced(text, want, kind):
    got, counts = R.text(text)
    assert got == want
    assert counts == {kind: 1}


def test_several_kinds_are_counted_each():
    got, counts = R.text("mail a@b.org or c@d.org, call 0171 2345678, pin: 1234, host 1.2.3.4")
    assert got == "mail [email] or [email], call [phone], pin: [secret], host [ip]"
    assert counts == {"email": 2, "phone": 1, "secret": 1, "ip": 1}


def test_json_encoded_text_is_redacted_too():
    """Tool results reach the cloud as JSON text: "\\n" before a value must not hide it."""
    s = json.dumps({"note": "call\n555-123-4567\nor mail\nanna@example.com"})
    got, counts = R.text(s)
    assert counts == {"email": 1, "phone": 1}
    assert json.loads(got) == {"note": "call\n[phone]\nor mail\n[email]"}


@pytest.mark.parametrize("text", [
    "set the bedroom to 19 degrees", "turn on the kitchen light at 21:30",
    "remind me on 2026-11-23", "remind me on 2026-11-23 at 21:30",
    "set brightness to 40 percent", "python 3.11.7", "call mum", "room 101",
    "the year 2026 was good", "4471", "timer for 25 minutes", "between 1999-2005",
    "1 000 000 people", "12 345 678 euros", "levels 10 20 30 40", "epoch 1732300000",
    "order 0001234", "version 10.0.19041.1234", "v1.2.3.4", "pi is 3.14159265358",
    "card 4111 1111 1111 1112",  # not Luhn-valid: a number, not a card
    "light.living_room_ceiling_lights_group_2", "id 550e8400-e29b-41d4-a716-446655440000",
    "path /usr/lib/python3.11/site-packages/llama_cpp/server",
    "AbstractSingletonProxyFactoryBean2Impl",
    "the password is not working", "send the token to alice", "my pin is wrong",
    "GPIO pin 17 high", "the alarm code for the garage", "the bearer of bad news",
    "sk-learn-is-not-a-key-at-all", "",
    "what is the temperature", "the code review is on Tuesday", "the error code is 404",
    '{"status_code": 200, "error_code": 4004}', "the key to success is patience",
    "the key is under the mat", "zip code is 90210", "the token count is 12",
    '{"key": "light.kitchen"}', "the secret to good coffee is fresh beans",
])
def test_ordinary_text_stays_untouched(text):
    assert R.text(text) == (text, {})


def test_patterns_off():
    assert Redactor(patterns=False).text("anna@example.com") == ("anna@example.com", {})
    r = Redactor(fields=["x"], patterns=False)
    assert r.data({"x": 1, "y": "a@b.org", "pin": "1234"}) == (
        {"x": "[redacted]", "y": "a@b.org", "pin": "1234"}, {"field": 1})


def test_fields_nested_case_insensitive_and_strings_inside():
    r = Redactor(fields=["location", "owner.name", "missing.path"])
    data = {"Location": "42 Main St", "owner": {"name": "Anna", "age": 3}, "n": 1,
            "note": ["mail bob@x.org"]}
    out, counts = r.data(data)
    assert out == {"Location": "[redacted]", "owner": {"name": "[redacted]", "age": 3},
                   "n": 1, "note": ["mail [email]"]}
    assert counts == {"field": 2, "email": 1}
    assert data["Location"] == "42 Main St" and data["note"] == ["mail bob@x.org"]  # a copy
    assert r.data(None) == (None, {})


def test_fields_through_non_dicts_and_lists():
    r = Redactor(fields=["owner.name", "Contacts.Phone", "gps"])
    data = {"owner": "Anna", "contacts": [{"PHONE": "x", "label": "home"}, "loose", 3],
            "gps": {"lat": 51.5, "lon": -0.1}, "flag": True, "none": None}
    out, counts = r.data(data)
    assert out == {"owner": "Anna",  # not a dict: nothing under it to blank
                   "contacts": [{"PHONE": "[redacted]", "label": "home"}, "loose", 3],
                   "gps": "[redacted]", "flag": True, "none": None}
    assert counts == {"field": 2}
    out["contacts"][0]["label"] = "changed"
    assert data["contacts"][0]["label"] == "home"  # deep copy


def test_values_under_secret_keys():
    out, counts = R.data({"wifi_password": "hunter2", "alarmCode": 4471, "pin": 17,
                          "token_count": 12, "apiKey": "abc", "name": "kitchen"})
    assert out == {"wifi_password": "[secret]", "alarmCode": "[secret]", "pin": 17,
                   "token_count": 12, "apiKey": "[secret]", "name": "kitchen"}
    assert counts == {"secret": 3}


def test_messages_content_and_tool_call_arguments():
    msgs = [{"role": "system", "content": "x"},
            {"role": "user", "content": "mail anna@example.com"},
            {"role": "user", "content": [{"type": "text", "text": "pin: 1234"},
                                         {"type": "image_url", "image_url": {"url": "u"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function",
                 "function": {"name": "f", "arguments": '{"to": "bob@x.org"}'}},
                {"id": "2", "type": "function",
                 "function": {"name": "g", "arguments": '{"pin": 4471, "room": "hall"}'}},
                {"id": "3", "type": "function",
                 "function": {"name": "h", "arguments": "not json, call 0171 2345678"}},
                {"id": "4", "type": "function",
                 "function": {"name": "i", "arguments": '{"room": "hall"}'}}]},
            {"role": "tool", "tool_call_id": "1", "content": '{"ok": true, "ip": "10.0.0.7"}'}]
    before = json.loads(json.dumps(msgs))
    out, counts = R.messages(msgs)
    assert out[0] == msgs[0]
    assert out[1]["content"] == "mail [email]"
    assert out[2]["content"][0] == {"type": "text", "text": "pin: [secret]"}
    assert out[2]["content"][1] == msgs[2]["content"][1]
    args = [c["function"]["arguments"] for c in out[3]["tool_calls"]]
    assert args[0] == '{"to": "[email]"}'
    assert json.loads(args[1]) == {"pin": "[secret]", "room": "hall"}  # still valid JSON
    assert args[2] == "not json, call [phone]"
    assert args[3] == '{"room": "hall"}'  # unchanged: byte for byte
    assert out[4]["content"] == '{"ok": true, "ip": "[ip]"}'
    assert counts == {"email": 2, "secret": 2, "phone": 1, "ip": 1}
    assert msgs == before  # the input is untouched


def test_is_sensitive():
    for s in ("The alarm code is 4471", "my bank account is with the post office",
              "write to anna@example.com", "my IBAN changed", "the Wi-Fi password",
              "the door code", "new api key", "credit card ends in 42", "a secret",
              "PIN code", "security codes"):
        assert is_sensitive(s), s
    for s in ("I like jazz in the evening", "turn the spin cycle on", "set heating to 21",
              "the spinach is in the fridge"):
        assert not is_sensitive(s), s


def test_large_input_is_fast():
    chunk = ("call 0171 2345678 or anna@example.com at 21:30 on 2026-11-23, the pin is "
             "1234, host 192.168.1.10, card 4111 1111 1111 1111. " * 1)
    text = chunk * 1000 + "1 " * 20000 + "9" * 20000 + "a1-" * 10000
    t0 = time.perf_counter()
    out, counts = R.text(text)
    assert time.perf_counter() - t0 < 5.0
    assert counts == {"phone": 1000, "email": 1000, "secret": 1000, "ip": 1000, "card": 1000}


FRAGMENTS = st.sampled_from([
    " ", "\n", "\\n", ".", "-", "+", "(", ")", ":", "=", "@", "/", "[", "]", '"', "'", "é",
    "0", "1", "7", "9", "a", "Z", "password is ", "pin: ", "alarm code ", "token=", "Bearer ",
    "anna@example.com", "0171 2345678", "+44 ", "(555) ", "1-800-", "2026-11-23", "21:30",
    "192.168.1.1", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "GB82", "sk-",
    "AKIA", "eyJhbGciOi.eyJzdWIi.", "9f86d081884c7d659a2feaa0c55ad015", "[phone]", "[secret]",
    "code for the door is ", "'s ", "\u2019s ", "combination is ", "key ", "passphrase is ",
    " equals ", " to be ", "12 34", "\u201c", "\u201d", "\u00a0", " for ", " to ", "Anna's",
])


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_and_is_idempotent(text):
    once, _ = R.text(text)
    assert R.text(once) == (once, {})


@settings(max_examples=500, deadline=None)
@given(st.lists(FRAGMENTS | st.text(max_size=3), max_size=25).map("".join))
def test_idempotent_on_text_made_of_near_misses(text):
    once, _ = R.text(text)
    assert R.text(once) == (once, {})
    assert is_sensitive(text) in (True, False)
