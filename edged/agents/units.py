"""Units: the unit a tool's parameter is in (from its name or description) and the value a
request gave in another unit, converted ("2 kilograms" for ``grams`` -> 2000, "half an hour"
for ``hold_minutes`` -> 30, "1832 fahrenheit" for a celsius temperature -> 1000).

Conversion is pint's (temperature offsets included). pint is imported on first use, and with
numpy hidden: pint would otherwise import numpy into the daemon (~14 MB resident), which the
daemon otherwise never loads (its models and embedder run in worker processes).
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

# words a person says (or a parameter is named with) -> pint unit
_SAID: dict[str, str] = {}
for _unit, _words in {
    "gram": "g gram grams gramme grammes gr",
    "kilogram": "kg kgs kilo kilos kilogram kilograms kilogrammes",
    "milligram": "mg milligram milligrams",
    "pound": "lb lbs pound pounds",
    "ounce": "oz ounce ounces",
    "second": "s sec secs second seconds",
    "minute": "min mins minute minutes",
    "hour": "h hr hrs hour hours",
    "day": "day days",
    "week": "week weeks",
    "fortnight": "fortnight fortnights",
    "month": "month months",
    "year": "year years",
    "degC": "c °c celsius centigrade degc",
    "degF": "f °f fahrenheit degf",
    "kelvin": "k kelvin",
    "bar": "bar bars",
    "millibar": "mbar millibar millibars",
    "psi": "psi",
    "kilopascal": "kpa kilopascal kilopascals",
    "liter": "l litre litres liter liters",
    "milliliter": "ml millilitre millilitres milliliter milliliters",
    "gallon": "gal gallon gallons",
    "meter": "m metre metres meter meters",
    "centimeter": "cm centimetre centimetres centimeter centimeters",
    "millimeter": "mm millimetre millimetres millimeter millimeters",
    "kilometer": "km kilometre kilometres kilometer kilometers",
    "foot": "ft foot feet",
    "inch": "in inch inches",
    "watt": "w watt watts",
    "kilowatt": "kw kilowatt kilowatts",
}.items():
    for _w in _words.split():
        _SAID[_w] = _unit

# units too short or too common to trust in a parameter's name or free text ("in", "s")
_NOT_IN_NAMES = {"s", "h", "m", "in", "l", "f", "c", "k", "g", "w", "gr"}
_DOC_UNIT = re.compile(r"\b(?:in|of|as)\s+(?:degrees\s+)?(°?[a-z]+)\b|\((°?[a-z]+)\)|(°[cf])\b",
                       re.I)

_lock = threading.Lock()
_registry: Any = None


def _ureg() -> Any:
    global _registry
    with _lock:
        if _registry is None:
            hidden = "numpy" not in sys.modules
            if hidden:
                sys.modules["numpy"] = None  # type: ignore[assignment]
            try:
                import pint
            finally:
                if hidden:
                    del sys.modules["numpy"]
            _registry = pint.UnitRegistry()
        return _registry


def param_unit(name: str, description: str = "") -> str | None:
    """The unit of a numeric parameter: a unit word in its name (``hold_minutes``,
    ``grams``, ``pressure_bar``), else one its description gives ("in celsius", "(bar)")."""
    for part in reversed(name.lower().split("_")):
        if part in _SAID and part not in _NOT_IN_NAMES:
            return _SAID[part]
    for m in _DOC_UNIT.finditer(description):
        word = (m.group(1) or m.group(2) or m.group(3) or "").lower()
        if word in _SAID and word not in {"in", "s", "m", "l"}:
            return _SAID[word]
    if re.search(r"°\s*C|degrees? celsius|celsius", description, re.I):
        return "degC"
    if re.search(r"\bseconds?\b", description, re.I) and not re.search(r"\bminutes?\b",
                                                                        description, re.I):
        return "second"
    if re.search(r"\bminutes?\b", description, re.I) and not re.search(r"\bhours?\b",
                                                                        description, re.I):
        return "minute"
    return None


def said_unit(word: str) -> str | None:
    return _SAID.get(word.lower().strip("."))


def convert(value: float, from_unit: str, to_unit: str) -> float | None:
    """``value`` in ``from_unit`` expressed in ``to_unit``; None when they measure
    different things (kilograms for minutes)."""
    if from_unit == to_unit:
        return value
    ureg = _ureg()
    try:
        return float(ureg.Quantity(value, from_unit).to(to_unit).magnitude)
    except Exception:  # noqa: BLE001 - pint's DimensionalityError and friends: not convertible
        return None
