"""stdlib logging set-up: readable on a terminal, JSON lines otherwise (journald, files)."""

from __future__ import annotations

import logging
import sys
import time

import msgspec

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_STD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JSONFormatter(logging.Formatter):
    """One JSON object a line; extra= fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(out, enc_hook=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        self.converter = time.localtime


def setup(level: str = "info", fmt: str = "auto", verbosity: int = 0) -> None:
    """Configure the root logger. ``verbosity`` is -v count minus -q count."""
    base = _LEVELS.get(level, logging.INFO)
    lvl = min(logging.ERROR, max(logging.DEBUG, base - 10 * verbosity))
    handler = logging.StreamHandler(sys.stderr)
    use_text = fmt == "text" or (fmt == "auto" and sys.stderr.isatty())
    handler.setFormatter(TextFormatter() if use_text else JSONFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    # paho logs every packet at debug; keep it quiet unless asked for.
    logging.getLogger("paho").setLevel(max(lvl, logging.WARNING))
