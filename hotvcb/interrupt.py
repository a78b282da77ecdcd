"""SIGINT/SIGTERM handling: the handler only records the signal.

Work loops call `pending()` and unwind through `raise_pending()`, so cleanup
(removing our snapshot) runs in ordinary `finally` blocks instead of inside a
signal handler.
"""

import signal
from typing import List

from .errors import Interrupted

_received = []  # type: List[int]


def _handler(signum, frame):  # noqa: ARG001 - signature fixed by signal
    _received.append(signum)


def install() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _handler)


def pending() -> bool:
    return bool(_received)


def signals() -> List[int]:
    """Every signal received so far, in order (an on-host run passes each on to the host)."""
    return list(_received)


def raise_pending() -> None:
    if _received:
        raise Interrupted(_received[0])


def reset() -> None:
    del _received[:]
