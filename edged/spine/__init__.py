"""The delivery spine: ingest (classify, admission, journal, ack) -> dispatch (claim by
priority, run the stage, commit the reply) -> sender (outbox -> bus, after the broker's ack).

Each part is a task the daemon runs; they share :class:`SpineState` and meet only in the
journal, so a crash anywhere loses nothing that was acknowledged.
"""

from .dispatch import Dispatcher
from .ingest import Ingest
from .sender import Sender, release_timers
from .state import SpineState

__all__ = ["Dispatcher", "Ingest", "Sender", "SpineState", "release_timers"]
