"""SIGINT/SIGTERM/SIGHUP/SIGQUIT handling: the handler only records the signal.

Work loops call `pending()` and unwind through `raise_pending()`, so cleanup
(removing our snapshot) runs in ordinary `finally` blocks instead of inside a
signal handler. A run may also be stopped for a reason of its own (`stop`:
its run lock taken over while it was stopped, store/lock.py), which unwinds
it the same way and is told as that reason, not as a signal.
"""

import signal
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Tuple, TypeVar

from .errors import Interrupted

if TYPE_CHECKING:  # the callers of `result` made the future: they have imported concurrent.futures
    from concurrent import futures

_received = []  # type: List[int]
_reasons = []  # type: List[str]  # why the run stops, where no signal stops it
_early = {}  # type: Dict[int, Any]  # the handlers early() replaced, while its own await the command's scope
T = TypeVar("T")
# SIGQUIT too (Ctrl-\, the key an admin presses when Ctrl-C seems slow; ghettoVCB trapped it with these):
# Python's default for it killed the run outright, its snapshot and run lock left behind
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
SLICE = 0.25  # seconds the main thread waits on a worker before it runs Python again


def _handler(signum, frame):  # noqa: ARG001 - signature fixed by signal
    _received.append(signum)


def install() -> None:
    """From the main thread only, the one Python lets set handlers: a command a program runs in a worker
    thread (cli.main as a library) leaves the program's handlers alone, and stops as the program has it.

    A signal ignored when hotvcb started stays ignored, as POSIX sh keeps it (a shell cannot trap a signal
    ignored at its start): `nohup hotvcb backup ... &` ignores SIGHUP, and a `&` job of a script SIGINT and
    SIGQUIT, so that the logout or the script's Ctrl-C leaves the run alone. ghettoVCB ran on under nohup;
    a handler put over the inherited SIG_IGN stopped hotvcb's run at the very logout nohup was to shield
    it from. (The on-host relay, onhost_boot.py, starts its run with no signal ignored, so it can stop it.)"""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _handler)


def early() -> None:
    """From the process's entry (`__main__`), before the rest of hotvcb is imported: a signal that comes
    while the run starts (imports, the command line, the config) is recorded as a later one is, so the run
    still ends as an interrupted run does (exit 2 and its final status), not by the signal (exit 143, no
    line). `scope` keeps it for a command that installs its handlers and gives one that does not Python's
    own back."""
    if threading.current_thread() is threading.main_thread():
        _early.update((sig, signal.getsignal(sig)) for sig in _SIGNALS)
        install()


def stop(reason: str) -> None:
    """Stop the run as SIGTERM does, from any thread; its Interrupted says `reason`."""
    _reasons.append(reason)


def pending() -> bool:
    return bool(_received or _reasons)


def signals() -> List[int]:
    """Every signal received so far, in order (an on-host run passes each on to the host)."""
    return list(_received)


def mark() -> Tuple[int, int]:
    """What was recorded so far, for `raise_pending(after=...)`: only what comes later stops the caller."""
    return len(_received), len(_reasons)


def raise_pending(after: Tuple[int, int] = (0, 0)) -> None:
    if len(_received) > after[0]:
        raise Interrupted(_received[after[0]])
    if len(_reasons) > after[1]:
        raise Interrupted(None, _reasons[after[1]])


def sleep_until(until: float, step: float = 0.1) -> None:
    """Sleep until `until` (time.monotonic), ending early with Interrupted on a signal: every wait of a run
    stops on SIGINT/SIGTERM, a plain time.sleep would hold Ctrl-C off until it ends."""
    while True:
        raise_pending()
        left = until - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, step))


def reset() -> None:
    del _received[:]
    del _reasons[:]


@contextmanager
def scope(catches: bool = False) -> Iterator[None]:
    """One command's signal handling: the handlers it installs are put back and what it recorded is
    forgotten when it returns, so a program calling cli.main (a library use) gets its Ctrl-C back, and a
    second command in the process does not start stopped by the first one's signal. Where `early()` caught
    the process's start-up, a command that `catches` signals (installs its handlers) keeps what was
    recorded and the handlers go on recording; one that does not gets the process's own back and, where a
    signal already came, is stopped before it starts."""
    main = threading.current_thread() is threading.main_thread()  # only it may set handlers
    started = bool(_early)
    if main and started and not catches:
        for sig, handler in _early.items():
            if handler is not None:
                signal.signal(sig, handler)
    _early.clear()
    kept = {sig: signal.getsignal(sig) for sig in _SIGNALS} if main else {}
    if not started:
        reset()
    try:
        if not catches:
            raise_pending()
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:  # None: set outside Python (an embedding program), not ours to put back
                signal.signal(sig, handler)
        reset()


def unless_stopped(work: "Callable[[], T]", after: Tuple[int, int] = (0, 0)) -> T:
    """`work()`, for a command that only reads (status) and may wait long in one call (a hung QEMU's QMP
    socket, up to 30 s), run in a daemon thread while the main thread waits in slices: a signal recorded
    meanwhile (a monitor's timeout, Ctrl-C) raises Interrupted at once and the work is left to end with the
    process. Waiting it out passed the monitor's timeout, Python's own SIGTERM died with 143, and either
    way status could not say UNKNOWN; a handler that raises is never one (docs/architecture.md, Signals).
    `after` (`mark()`): a signal recorded before is not this work's to stop (an interrupted run's report is
    still mailed; a signal while the mail server hangs stops the mail)."""
    box = {}  # type: Dict[str, Any]

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as err:  # noqa: BLE001 - given to the main thread as it is
            box["error"] = err

    thread = threading.Thread(target=run, name="hotvcb-unless-stopped", daemon=True)
    thread.start()
    while thread.is_alive():
        raise_pending(after)
        thread.join(SLICE)
    if "error" in box:
        raise box["error"]
    return box["value"]


def result(future: "futures.Future[T]") -> T:
    """The future's result, waited for in slices. A signal sent to the process may be taken from the
    kernel by a worker thread (one returning from a syscall just then), and Python runs its handler only
    in the main thread, once that runs Python again: a main thread blocked in one long wait on a worker
    that itself waits for `pending()` (a restore waiting out a lagging listing) would wait it all out."""
    from concurrent import futures  # loaded already by whoever made `future`; with logging, ~5 ms of start-up
    while True:
        try:
            return future.result(timeout=SLICE)
        except futures.TimeoutError:
            pass


@contextmanager
def held(lock: "threading.Lock") -> Iterator[None]:
    """`with lock`, taken in slices, for the main thread's wait on a lock a worker may hold while it waits
    for `pending()` (see `result`)."""
    while not lock.acquire(timeout=SLICE):
        pass
    try:
        yield
    finally:
        lock.release()
