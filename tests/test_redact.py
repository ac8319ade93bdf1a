"""Redaction of what may leave the device (pure functions; no network)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.redact import Redactor, is_sensitive

R = Redactor()


@pytest.mark.parametrize("text, want", [
    ("mail anna@example.com now", "mail [email] now"),
    ("my number is +44 20 7946 0958", "my number is [phone]"),
    ("call (555) 123-4567 today", "call [phone] today"),
    ("ring 0171 2345678", "ring [phone]"),
    ("call me at 020 7946 0958", "call me at [phone]"),
    ("the alarm code is 4471", "the alarm code is [secret]"),
    ("my pin is 1234", "my pin is [secret]"),
    ("password=abc123", "password=[secret]"),
    ("the wifi password: hunter2.", "the wifi password: [secret]."),
    ("key sk-abcdefghijklmnopqrstuv", "key [secret]"),
    ("Authorization: Bearer abcdef123456789", "Authorization: Bearer [secret]"),
    ("token eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "token [secret]"),
    ("hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
     "hash [secret]"),
    ("card 4111 1111 1111 1111", "card [card]"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [iban]"),
    ("server at 192.168.1.10", "server at [ip]"),
])
def test_patterns_are_replaced(text, want):
    got, counts = R.text(text)
    assert got == want
    assert sum(counts.values()) == 1


@pytest.mark.parametrize("text", [
    "set the bedroom to 19 degrees", "turn on the kitchen light at 21:30",
    "remind me on 2026-11-23", "set brightness to 40 percent", "python 3.11.7", "call mum",
    "room 101", "the year 2026 was good", "4471", "timer for 25 minutes",
    "card 4111 1111 1111 1112",  # not Luhn-valid: a number, not a card
])
def test_ordinary_requests_stay_untouched(text):
    assert R.text(text) == (text, {})


def test_fields_nested_case_insensitive_and_strings_inside():
    r = Redactor(fields=["location", "owner.name", "missing.path"])
    data = {"Location": "42 Main St", "owner": {"name": "Anna", "age": 3}, "n": 1,
            "note": ["mail bob@x.org"]}
    out, counts = r.data(data)
    assert out == {"Location": "[redacted]", "owner": {"name": "[redacted]", "age": 3},
                   "n": 1, "note": ["mail [email]"]}
    assert counts == {"field": 2, "email": 1}
    assert data["Location"] == "42 Main St"  # a copy
    assert r.data(None) == (None, {})


def test_messages_content_and_tool_call_arguments():
    msgs = [{"role": "system", "content": "x"},
            {"role": "user", "content": "mail anna@example.com"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function",
                 "function": {"name": "f", "arguments": '{"to": "bob@x.org"}'}}]}]
    out, counts = R.messages(msgs)
    assert out[1]["content"] == "mail [email]"
    assert out[2]["tool_calls"][0]["function"]["arguments"] == '{"to": "[email]"}'
    assert counts == {"email": 2}
    assert msgs[1]["content"] == "mail anna@example.com"


def test_patterns_off_and_sensitivity():
    assert Redactor(patterns=False).text("anna@example.com") == ("anna@example.com", {})
    assert is_sensitive("The alarm code is 4471")
    assert is_sensitive("my bank account is with the post office")
    assert is_sensitive("write to anna@example.com")
    assert not is_sensitive("I like jazz in the evening")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_and_is_idempotent(text):
    once, _ = R.text(text)
    assert R.text(once)[0] == once
