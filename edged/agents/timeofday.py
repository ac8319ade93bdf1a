"""Times of day said in words or digits, for a string parameter that wants one ("24-hour
HH:MM", or a pattern of that shape; "Tuesday 09:30" when its description shows a day first):
"7am", "6:30", "six thirty", "half past eight", "quarter to six", "noon", "at 9"."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import slots

_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
         "today", "tomorrow", "tonight")
_CLOCK = re.compile(r"\b([01]?\d|2[0-3])[:.h]([0-5]\d)\s*(a\.?\s?m\.?|p\.?\s?m\.?)?(?![\w:])", re.I)
_HOUR_AMPM = re.compile(r"\b(1[0-2]|0?[1-9])\s*(?:o'?clock\s*)?(a\.?\s?m\.?|p\.?\s?m\.?)(?!\w)",
                        re.I)
_NAMED = {"noon": (12, 0), "midday": (12, 0), "midnight": (0, 0)}
_WORD_HOURS = {w: n for w, n in slots._UNITS.items() if 1 <= n <= 12 and w not in ("a", "an")}
_MINUTE_WORDS = {"oh five": 5, "o five": 5, "fifteen": 15, "thirty": 30, "forty five": 45,
                 "forty-five": 45, "ten": 10, "twenty": 20, "forty": 40, "fifty": 50,
                 "twenty five": 25, "thirty five": 35, "fifty five": 55, "oh ten": 10}


@dataclass(frozen=True)
class TimeSaid:
    hour: int
    minute: int
    day: str | None
    start: int  # character span in the (lowercased) text
    end: int

    def format(self, with_day: bool = False, padded: bool = True) -> str:
        hhmm = f"{self.hour:02d}:{self.minute:02d}" if padded else \
            f"{self.hour}:{self.minute:02d}"
        day = self.day[:1].upper() + self.day[1:] if self.day else ""
        return f"{day} {hhmm}" if with_day and day else hhmm


def padded(prop: dict[str, object], description: str) -> bool:
    """Hours as the parameter's own example writes them: "09:30", or "9:30"."""
    pattern = str(prop.get("pattern") or "")
    if re.search(r"\d\{2\}|\[01\]", pattern):
        return True
    return not re.search(r"(?<![\d:])\d:\d{2}\b", description)


def wants_time(prop: dict[str, object], description: str) -> tuple[bool, bool]:
    """(the parameter is a time of day, it wants a day before the time)."""
    pattern = str(prop.get("pattern") or "")
    is_time = bool(re.search(r"\\d\{2\}\)?:|\[0-5\]\\d|HH:MM", pattern + " " + description,
                             re.I) or re.search(r"\b\d{1,2}:\d{2}\b", description)
                   and re.search(r"\btime\b", description, re.I))
    with_day = bool(re.search(r"\b(" + "|".join(_DAYS) + r")\b\s+\d{1,2}:\d{2}", description,
                              re.I))
    if not is_time and re.match(r"(?i)\s*(day and time|date and time|time of day|time)\b",
                                description):
        # "Day and time of the visit to cancel": a time, though no format is shown
        is_time = True
        with_day = with_day or bool(re.match(r"(?i)\s*(day|date) and time", description))
    return is_time, with_day


def explicit(text: str) -> TimeSaid | None:
    """A time said so that it cannot be a plain number: "9:30", "7pm", "half past eight",
    "quarter to six", "noon"; not "at nine"."""
    low = text.lower()
    if re.search(r"\b([01]?\d|2[0-3]):[0-5]\d\b", low) or _HOUR_AMPM.search(low) or re.search(
            r"\b(half|quarter)\s+(past|to|after|before)\b|\b(noon|midday|midnight)\b|"
            r"\bo'?clock\b|\bat half (?:one|two|three|four|five|six|seven|eight|nine|ten|"
            r"eleven|twelve|\d{1,2})\b", low):
        return find(text)
    return None


_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august",
                "september", "october", "november", "december")
_ORDINAL_WORDS = {w: i for i, w in enumerate(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
    "twentieth".split(), 1)} | {"twenty first": 21, "twenty second": 22, "twenty third": 23,
                               "twenty fourth": 24, "twenty fifth": 25, "twenty sixth": 26,
                               "twenty seventh": 27, "twenty eighth": 28, "twenty ninth": 29,
                               "thirtieth": 30, "thirty first": 31}
_MONTH_RX = "|".join(_MONTH_NAMES)
_DAY_NUM = r"(\d{1,2})(?:st|nd|rd|th)?|(" + "|".join(
    sorted(_ORDINAL_WORDS, key=len, reverse=True)).replace(" ", r"[\s-]") + ")"
_DATE = re.compile(rf"\b(?:the\s+)?(?:{_DAY_NUM})(?:\s+of)?\s+({_MONTH_RX})\b|"
                   rf"\b({_MONTH_RX})\s+(?:the\s+)?(?:(\d{{1,2}})(?:st|nd|rd|th)?\b)")


def day_said(low: str) -> tuple[str, int, int] | None:
    """The day named in ``low`` (a date as "14 March", else a weekday or "tomorrow"), with
    its span."""
    if m := _DATE.search(low):
        if m.group(3):
            n = int(m.group(1)) if m.group(1) else \
                _ORDINAL_WORDS[re.sub(r"[\s-]+", " ", m.group(2))]
            month = m.group(3)
        else:
            n, month = int(m.group(5)), m.group(4)
        if 1 <= n <= 31:
            return f"{n} {month.capitalize()}", m.start(), m.end()
    for d in _DAYS:
        if m := re.search(rf"\b{d}\b", low):
            return ("today" if d == "tonight" else d), m.start(), m.end()
    return None


def find(text: str) -> TimeSaid | None:
    """The time of day in ``text``, or None."""
    low = text.lower()
    said_day = day_said(low)
    day = said_day[0] if said_day else None
    if m := _CLOCK.search(low):
        h, mi = int(m.group(1)), int(m.group(2))
        return TimeSaid(_ampm(h, m.group(3)), mi, day, m.start(), m.end())
    if m := _HOUR_AMPM.search(low):
        return TimeSaid(_ampm(int(m.group(1)), m.group(2)), 0, day, m.start(), m.end())
    for name, (h, mi) in _NAMED.items():
        if m := re.search(rf"\b{name}\b", low):
            return TimeSaid(h, mi, day, m.start(), m.end())
    hours = "|".join(sorted(_WORD_HOURS, key=len, reverse=True)) + r"|1[0-2]|0?[1-9]"
    if m := re.search(rf"\b({'|'.join(_PAST_MINUTES)})\s+(?:minutes\s+)?(past|to|after|before)"
                      rf"\s+({hours})\b(?!\s*(?:minutes?|hours?|days?|weeks?|people|guests))"
                      r"(\s*(?:a\.?\s?m\.?|p\.?\s?m\.?|in the (?:morning|afternoon|evening)))?",
                      low):  # "ten to eleven", "twenty past six"
        h, mi = _hour(m.group(3)), _PAST_MINUTES[m.group(1)]
        if m.group(2) in ("to", "before"):
            h, mi = (h - 1) % 12 or 12, 60 - mi
        return TimeSaid(_ampm(h, m.group(4)), mi, day, m.start(), m.end())
    if m := re.search(rf"\b(half|quarter)\s+(past|to|after|before)\s+({hours})\b"
                      r"(\s*(?:a\.?\s?m\.?|p\.?\s?m\.?|in the (?:morning|afternoon|evening)))?",
                      low):
        h = _hour(m.group(3))
        mi = 30 if m.group(1) == "half" else 15
        if m.group(2) in ("to", "before"):
            h, mi = (h - 1) % 12 or 12, 60 - mi
        return TimeSaid(_ampm(h, m.group(4)), mi, day, m.start(), m.end())
    # British "half nine" is 9:30 (after "at", so that "half nine" of something is not)
    if m := re.search(rf"\bat\s+half\s+({hours})\b(\s*(?:a\.?\s?m\.?|p\.?\s?m\.?|"
                      r"in the (?:morning|afternoon|evening)))?", low):
        return TimeSaid(_ampm(_hour(m.group(1)), m.group(2)), 30, day, m.start(), m.end())
    minutes = "|".join(sorted(_MINUTE_WORDS, key=len, reverse=True))
    if m := re.search(rf"\b({hours})\s+({minutes}|[0-5]\d)\b(\s*(?:a\.?\s?m\.?|p\.?\s?m\.?|"
                      r"in the (?:morning|afternoon|evening)))?", low):
        if _after_at_or_time_word(low, m.start()):
            word = m.group(2)
            mi = int(word) if word.isdigit() else _MINUTE_WORDS.get(word, 0)
            return TimeSaid(_ampm(_hour(m.group(1)), m.group(3)), mi, day,
                            m.start(), m.end())
    if m := re.search(rf"\b(?:at|for)\s+({hours})(\s*(?:o'?clock|a\.?\s?m\.?|p\.?\s?m\.?|"
                      r"in the (?:morning|afternoon|evening)))?(?!\s*(?:minutes?|hours?|"
                      r"seconds?|degrees?|percent|%|people|guests))\b", low):
        return TimeSaid(_ampm(_hour(m.group(1)), m.group(2)), 0, day, m.start(1), m.end())
    return None


_PAST_MINUTES = {"five": 5, "ten": 10, "twenty": 20, "twenty five": 25, "twenty-five": 25}


def _after_at_or_time_word(low: str, pos: int) -> bool:
    before = low[:pos].split()[-3:]
    return any(w in ("at", "for", "call", "wake", "until", "from", "by") for w in before) or \
        bool(re.search(r"(wake|alarm|call|remind)", low))


def _hour(word: str) -> int:
    return int(word) if word.isdigit() else _WORD_HOURS[word]


def _ampm(h: int, suffix: str | None) -> int:
    s = (suffix or "").replace(".", "").replace(" ", "").lower()
    if s.startswith("pm") or "afternoon" in s or "evening" in s:
        return h + 12 if h < 12 else h
    if s.startswith("am") or "morning" in s:
        return 0 if h == 12 else h
    return h


# -- a free-form "when" ("Thursday morning", "the 14th of March at 2pm") ------------------

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december", "jan", "feb", "mar", "apr",
           "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
# words that say when on their own
_CORE = set(_DAYS) | {d + "s" for d in _DAYS[:7]} | set(_MONTHS) | {
    "morning", "afternoon", "evening", "noon", "midday", "midnight", "weekend", "week",
    "month", "asap", "lunchtime", "teatime"}
# words that join or qualify them ("next", "at", "between 8 and 10")
_JOIN = {"next", "this", "coming", "at", "on", "of", "the", "between", "and", "in", "around",
         "about", "early", "late", "mid", "from", "until", "till", "by", "after", "before",
         "first", "thing", "end", "start", "beginning", "middle"}
_ORDINAL = re.compile(r"^\d{1,2}(?:st|nd|rd|th)$|^(?:first|second|third|fourth|fifth|sixth|"
                      r"seventh|eighth|ninth|tenth|[a-z]+teenth|twentieth|twenty[- ]?\w+|"
                      r"thirtieth|thirty[- ]?first)$")
_WHEN_PARAM = re.compile(r"^(?:when|slot|date|day|datetime|date_time|appointment|"
                         r"time_slot|visit_time|start|until|till|deadline|expires|due|"
                         r"end_date|ends|ends_on|valid_until)$", re.I)


def wants_phrase(name: str, description: str) -> bool:
    """A string parameter that holds when, in the user's own words ("When the customer wants
    the visit, e.g. "Thursday morning"")."""
    return bool(_WHEN_PARAM.match(name)) or bool(
        re.match(r"(?i)\s*(?:when\b|the (?:day|date|time)\b|day,? date|date,? time|"
                 r"(?:the )?(?:last|first|final) day\b)",
                 description))


def phrase(text: str) -> tuple[int, int] | None:
    """The character span of the longest run of words that say when, or None."""
    toks = [(m.group(0).lower(), m.start(), m.end())
            for m in re.finditer(r"[\w:.']+", text)]

    def timeish(i: int) -> bool:
        w = toks[i][0].rstrip(".")
        if w in _CORE or _ORDINAL.match(w) or re.fullmatch(r"\d{1,2}(?:[:.][0-5]\d)?(?:am|pm)"
                                                           r"|\d{1,2}:[0-5]\d|\d{1,2}", w):
            return not (w.isdigit() and not _joined_number(i) and not _by_month(i))
        if w in ("am", "pm", "o'clock") and i and toks[i - 1][0][:1].isdigit():
            return True
        return w in _WORD_HOURS and _joined_number(i)

    def _by_month(i: int) -> bool:
        """A day of the month: "31 August", "August 31"."""
        near = [toks[j][0] for j in (i - 1, i + 1) if 0 <= j < len(toks)]
        return int(toks[i][0]) <= 31 and any(w in _MONTHS for w in near)

    def _joined_number(i: int) -> bool:
        """A bare number is a time after "at", "between", "and", "till" ("Saturday at 9")."""
        return i > 0 and toks[i - 1][0] in ("at", "between", "and", "till", "until", "by",
                                            "from", "to") and any(
            toks[j][0] in _CORE or (toks[j][0] == "between" and j < i - 1)
            for j in range(max(0, i - 4), i))

    best: tuple[int, int] | None = None
    i = 0
    while i < len(toks):
        if not timeish(i):
            i += 1
            continue
        start = i
        while start > 0 and toks[start - 1][0] in ("next", "this", "coming", "early", "late",
                                                   "mid", "the", "end", "start", "of",
                                                   "beginning", "middle"):
            start -= 1
        end = i + 1
        while end < len(toks):
            if timeish(end):
                end += 1
                continue
            j = end
            while j < len(toks) and toks[j][0] in _JOIN and not timeish(j):
                j += 1
            if j < len(toks) and j > end and timeish(j):
                end = j + 1
                continue
            break
        while start < end and toks[start][0] in ("the", "on", "at", "and", "of"):
            start += 1
        if best is None or toks[end - 1][2] - toks[start][1] > best[1] - best[0]:
            best = (toks[start][1], toks[end - 1][2])
        i = end
    return best


# -- several times in one request ("from Tuesday 10:30 to Thursday 10:30") ----------------

_OLD_CUE = re.compile(r"(?:\bfrom|\binstead of|\brather than|\bcurrently|\bbooked (?:for|on)|"
                      r"\bwas|\bnow)\s*(?:the\s+|his\s+|her\s+|their\s+|its\s+)?(?:\w+'s\s+)?$")
_SEGMENT = re.compile(r"\s(?:to|instead of|from|rather than|until|and)\s|,")


@dataclass(frozen=True)
class Moment:
    """A day, a time or both, said together; ``old``: said as when it is now ("from
    Tuesday", "instead of Thursday")."""
    day: str | None
    time: TimeSaid | None
    start: int
    end: int
    old: bool

    def format(self, with_day: bool, padded: bool, afternoon: bool) -> str:
        if self.time is None:
            return (self.day or "")[:1].upper() + (self.day or "")[1:]
        t = self.time
        if afternoon and 1 <= t.hour <= 6:  # "Thursday at quarter past two": 14:15
            t = TimeSaid(t.hour + 12, t.minute, t.day, t.start, t.end)
        return TimeSaid(t.hour, t.minute, self.day, t.start, t.end).format(with_day, padded)


def moments(text: str) -> list[Moment]:
    """Every day and time said, paired where nothing separates them, in order."""
    low = text.lower()
    times: list[TimeSaid] = []
    blank = low
    for _ in range(3):
        t = find(blank)
        if t is None:
            break
        times.append(t)
        blank = blank[:t.start] + " " * (t.end - t.start) + blank[t.end:]
    days: list[tuple[str, int, int]] = []
    for _ in range(3):
        d = day_said(blank)
        if d is None:
            break
        days.append(d)
        blank = blank[:d[1]] + " " * (d[2] - d[1]) + blank[d[2]:]
    out: list[Moment] = []
    used: set[int] = set()
    for t in times:
        best: tuple[int, int] | None = None
        for i, (_, ds, de) in enumerate(days):
            lo, hi = (de, t.start) if de <= t.start else (t.end, ds)
            if i not in used and not _SEGMENT.search(low[lo:hi]) and hi - lo < 25 and (
                    best is None or hi - lo < best[1]):
                best = (i, hi - lo)
        day: str | None = None
        start, end = t.start, t.end
        if best is not None:
            used.add(best[0])
            day, ds, de = days[best[0]]
            start, end = min(start, ds), max(end, de)
        out.append(Moment(day, t, start, end, bool(_OLD_CUE.search(low[:start]))))
    for i, (name, ds, de) in enumerate(days):
        if i not in used:
            out.append(Moment(name, None, ds, de, bool(_OLD_CUE.search(low[:ds]))))
    return sorted(out, key=lambda m: m.start)


def said_afternoon(text: str) -> bool:
    """No morning said: an appointment at "two" is in the afternoon."""
    return not re.search(r"\b(?:a\.?\s?m\b|morning|in the night)", text.lower())
