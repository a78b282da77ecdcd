"""One piece of reading work run in a thread beside a copy, so data is read once in time;
and questions to the host asked in threads before their answers are needed (`Ahead`), whose
kept answers several threads share (`Kept`).

A restore checks the backup's digests while `vmkfstools` clones it, instead
of reading the whole backup first and then cloning it: on a host where both
reads come from the page cache or the same datastore the check then costs
little more than the clone. The work itself (a digest of files) must be
side-effect free: when the copy fails, the check is only stopped.

The work gets a `check` callable to call between units of work (each block
it reads): it raises `Cancelled` once the owner gave up, and `Interrupted`
on a pending signal (which the owner's own loops see as well). Its return
value or exception is handed to the owner by `result()`, in the owner's
thread, so a failure there is a failure of the run, never a lost traceback.
"""

import threading
from typing import Callable, Generic, Optional, TypeVar

from . import interrupt
from .errors import HotvcbError

T = TypeVar("T")
CANCEL_WAIT = 30.0  # seconds a cancelled worker may take to notice (one block read)
POLL = 0.2


class Cancelled(Exception):
    """Raised inside the worker after `cancel()`; never seen by the owner."""


class _Worker(threading.Thread):
    """A Background's thread, which carries its owner's "given up" to the commands it runs."""

    def __init__(self, target: Callable[[], None], name: str, stop: threading.Event):
        super().__init__(target=target, name=name, daemon=True)
        self.stop = stop


def given_up() -> bool:
    """Has the owner of the work this thread runs given it up? cmdstream.stream then ends the command it
    runs, as it does on a signal, but also where a signal may not (`interruptible=False`): no one
    will read the answer, and a command left running would outlive hotvcb (its own session)."""
    thread = threading.current_thread()
    return isinstance(thread, _Worker) and thread.stop.is_set()


class Background(Generic[T]):
    def __init__(self, work: Callable[[Callable[[], None]], T], name: str):
        self._work = work
        self._stop = threading.Event()
        self._value = None  # type: Optional[T]
        self._error = None  # type: Optional[BaseException]
        self._thread = _Worker(self._main, "hotvcb-" + name, self._stop)
        self._thread.start()

    def _check(self) -> None:
        if self._stop.is_set():
            raise Cancelled()
        if interrupt.pending():
            interrupt.raise_pending()

    def _main(self) -> None:
        try:
            self._value = self._work(self._check)
        except BaseException as err:  # handed to the owner by result()
            self._error = err

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self, cancel_wait: float = CANCEL_WAIT) -> T:
        """Wait for the work (as long as it needs: it reads a bounded amount) and
        return its value or raise its exception; a signal meanwhile stops it
        (waiting `cancel_wait` seconds for it to notice)."""
        while self._thread.is_alive():
            self._thread.join(POLL)
            if interrupt.pending():
                self.cancel(cancel_wait)
                interrupt.raise_pending()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def cancel(self, wait: float = CANCEL_WAIT) -> None:
        """Stop the work at its next `check`, ending a command it runs (`given_up`), and wait for it
        briefly (it only reads)."""
        self._stop.set()
        self._thread.join(wait)


class Ahead(Generic[T]):
    """A question to the host asked in a thread now, its answer taken where it is needed.

    Each question is a round trip to hostd (a process on esxisim), so questions that do not
    depend on each other are asked at once rather than one after the other. Only questions:
    nothing that changes the host is asked ahead, so the order of what acts stays as it was.
    The error of a question that failed is raised by `answer()` in the caller's own turn, where
    the question was asked before: the same error, in the order the checks always ran, after
    one wait for a hung host, not two (`take()` gives None, and the caller asks again).
    `drop()` ends a question still out, so none outlives its run, nor holds its end.
    """

    def __init__(self, ask: Callable[[], T], name: str):
        self._work = Background(lambda _check: ask(), name)  # type: Background[T]

    def take(self) -> Optional[T]:
        """The answer; None where the question failed (the caller asks again, in its own turn)."""
        try:
            return self._work.result(cancel_wait=0)  # a signal: not waited for (see drop)
        except HotvcbError:
            return None

    def answer(self) -> T:
        """The answer, or the question's error raised here."""
        return self._work.result(cancel_wait=0)

    def drop(self) -> None:
        """Forget the question, ending its command if it is still out, and wait only for that end, not
        for an answer no one will read: a hung hostd held a failed restore's report for the listing's
        300 s timeout. The same with or without a signal: it only reads."""
        self._work.cancel()


class Kept(Generic[T]):
    """An answer a driver keeps for the run (ESXi: version, name, datastore listing), asked by one
    thread at a time: a run asks them beside each other (jobs/ahead.py), and a caller arriving
    while one is being asked waits for that answer, or that error, rather than asking hostd a
    second time (a hung hostd then costs one timeout, not one per caller); a later caller asks
    again after a failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = None  # type: Optional[T]
        self._failures = 0  # how many times asking it failed
        self._error = None  # type: Optional[Exception]  # the last failure's

    def get(self, ask: Callable[[], T]) -> T:
        arrived = self._failures
        while not self._lock.acquire(timeout=POLL):
            if given_up():  # a dropped question waiting behind a hung one: its dropper waits for it
                raise Cancelled()
        try:
            if self.value is not None:
                return self.value
            if self._failures > arrived and self._error is not None:
                raise self._error  # asked, and failed, while this caller waited
            try:
                self.value = ask()
            except Cancelled:
                raise  # given up, not failed: a caller waiting meanwhile asks itself
            except Exception as err:
                self._failures, self._error = self._failures + 1, err
                raise
            return self.value
        finally:
            self._lock.release()
