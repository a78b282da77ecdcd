"""One run per hypervisor host: a lock that lives on the host it guards.

A lock in the local work directory (`-w`) let a second run with another
`-w`, `hotvcb cleanup` during the nightly job, or a second Linux box in SSH
mode work on the same host at once and remove each other's snapshots. So the
lock file sits on the host itself (the driver's `run_dir`: /var/run on ESXi,
the QMP folder for QEMU), reached through the same Shell as everything else.

Taking it (no empty-file window, no double takeover):

1. The run record (runid.py) is written to `<lock>.<run>` first, then
   hard-linked as `<lock>`: the lock appears with its content, or not at all
   (a link fails if the name exists, locally, over SSH and on NFS alike).
2. A lock whose holder is alive refuses the run, naming the holder.
3. A stale lock is taken over only inside a second, short-lived lock
   `<lock>.takeover` taken the same way: of two runs that both found the lock
   stale, one removes it and takes it; the other then finds a live holder.
   A guard left by a taker killed inside its takeover is removed at once when
   its record's run is gone by its pid (as a lock's holder is judged), else
   once TAKEOVER_STALE old -- and only if it still holds the record judged: a
   live taker may have put its own guard there meanwhile.

Liveness: a holder on this machine (its host name and, where both records carry one, its machine id:
runid.same_machine) is alive while its pid is a hotvcb
process that started when the lock says (runid.running, the GC lock's rule
too): the lock records its process's start time where /proc tells it, as a
dead run's pid may be another hotvcb's now (a lock without it, and ESXi,
which has no /proc, go by the pid alone). A holder whose pid cannot tell
(another pid namespace of this machine, a process /proc hides from us) and
a holder elsewhere (SSH mode from
another box) are alive while the heartbeat is fresh: the holder touches the
lock every HEARTBEAT seconds and a lock untouched for STALE_AFTER seconds is
stale. A heartbeat dated ahead of the host's clock (a clock stepped back: a live
holder's last beat is, until its next) cannot tell: a run watches the lock for a
beat (clockage.beating) and takes it over only if it did not move.
A cleanup SSH mode runs on the host is told by its client which holder
is a run of the client's whose pid is gone (`gone_here`): a kill -9'd
file-by-file run's lock is then taken at once, not STALE_AFTER later. The
same heartbeat keeps the run's `-partial` folder owner files fresh
(`watch`), which is how hosts sharing an NFS volume tell a live backup from a
dead one.

A holder only stopped (SIGSTOP, a VM host's hiccup) past STALE_AFTER loses its
lock to the next run and, continued, must not go on beside it: its heartbeat
(`check`) reads the lock before each beat, and once another run holds it the
run stops as on SIGTERM (interrupt.stop): it undoes its own snapshot, partial
backup and powered-off VM, names the taker in its log and final status, and
touches neither that run's lock nor its owner files again. A run also checks
right before it changes a VM (a snapshot, a power-off), which a heartbeat
could be up to HEARTBEAT late for: one read of a small file, one round trip in
file-by-file SSH mode, next to a snapshot or shutdown that takes seconds.
The taker keeps when it took each lock over (`takeovers`): what carries a dead
run's id but was made after that is a resumed run's (jobs/leftovers.py).

The host id (runid.host_id) is kept next to the lock. It lives on the host's
ramdisk on ESXi and is new after a reboot, which only makes older records look
foreign — and foreign records are judged by their heartbeat.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .. import interrupt, lazyre
from ..clockage import Reading, beating, heartbeat
from ..errors import HostError, LockError
from ..runid import RECORD_MAX, RunId, parse, running
from ..shell import Shell

LOCK_NAME = "hotvcb.lock"
SWEEP_NAME = "hotvcb.sweep"  # a dead run's lock was taken over: its leftovers are still to be looked for
SWEEP_KEEP = 16  # dead runs the sweep record names at most (the newest): each a line, well under RECORD_MAX
HEARTBEAT = 30.0
STALE_AFTER = 300.0  # ten missed heartbeats
TAKEOVER_STALE = 60.0  # a takeover takes milliseconds; one this old died mid-way
_TAKEN_AT = lazyre.compile(r" takeover=([0-9]{1,12})$")  # a sweep record line's end: when the lock was taken over


def holder_alive(shell: Shell, path: str, record: Optional[RunId], me: RunId,
                 gone: Sequence[str] = ()) -> Optional[bool]:
    """Is the run that wrote `record` into `path` still running? By its pid where that tells (_by_pid), else by its
    heartbeat: touched within STALE_AFTER; None where that is dated further ahead (clockage.heartbeat: cannot tell
    without watching it, as HostLock does before a takeover)."""
    by_pid = _by_pid(record, me, gone)
    return by_pid if by_pid is not None else heartbeat(shell.age(path), STALE_AFTER)


def _by_pid(record: Optional[RunId], me: RunId, gone: Sequence[str]) -> Optional[bool]:
    """Whether the lock's holder runs, where its pid tells: one of this machine is asked by its pid
    (runid.running), one SSH mode's client judged so and named `gone` (its run id) is not; None for any other."""
    if record is not None and record.run in gone:
        return False
    if record is not None and record.same_machine(me):
        return running(record, me)
    return None


def gone_here(shell: Shell, run_dir: str) -> List[str]:
    """SSH mode's client, before a cleanup runs on the host: the run id of the lock's holder where it is a run of
    this machine whose process is gone (a kill -9'd file-by-file run), else nothing. The run on the host cannot
    ask this machine's /proc and would judge such a lock by its heartbeat, refusing for STALE_AFTER (5 min)
    after the crash; this machine tells by the pid, as for a lock of its own runs (`holder_alive`). The run id
    names that one record: a lock taken meanwhile by another run is judged as ever."""
    try:
        record = parse(shell.read_regular(run_dir.rstrip("/") + "/" + LOCK_NAME, RECORD_MAX))
    except HostError:
        return []
    me = RunId.new()
    if record is None or not record.same_machine(me):
        return []
    return [record.run] if running(record, me) is False else []


def _way_out(record: Optional[RunId], me: RunId) -> str:
    """What frees a lock judged by its heartbeat because its holder ran on another machine: there, a dead run (a
    kill -9'd file-by-file run, seen from the run it left on the host) is told gone at once by `cleanup`, whose
    client asks its own /proc (`gone_here`); anywhere, STALE_AFTER without a heartbeat."""
    if record is None or record.same_machine(me):
        return ""
    there = record.machine_seen_from(me)
    return ("; if that run is no longer running on %s (killed), `hotvcb cleanup` started from there takes its "
            "lock over at once; otherwise the lock is free %d s after that run's last heartbeat"
            % (there, STALE_AFTER))


class HostLock:
    def __init__(self, shell: Shell, run_dir: str, run: RunId, log: Optional[Callable[[str], None]] = None,
                 gone: Sequence[str] = ()):
        self.shell, self.run = shell, run
        self.gone = tuple(gone)  # runs SSH mode's client found gone by their pid (gone_here)
        self.record = run.with_process_start().text() + "\n"  # with its start: a reused pid is no holder
        self.path = run_dir.rstrip("/") + "/" + LOCK_NAME
        self.run_dir = run_dir
        self.log = log or (lambda msg: None)
        self.held = False
        self.took_over = False  # from a dead run: its leftovers may be anywhere on the host
        self.sweep_path = run_dir.rstrip("/") + "/" + SWEEP_NAME
        self._watched = []  # type: List[str]
        self._stop = threading.Event()
        self._beat = None  # type: Optional[threading.Thread]
        self.lost_to = None  # type: Optional[RunId]  # the run that took the lock over while this one was stopped
        self._checking = threading.Lock()  # the heartbeat's check and a change's: one says the loss, once

    def acquire(self) -> "HostLock":
        try:
            self.shell.makedirs(self.run_dir)
            mine = "%s.%s" % (self.path, self.run.run)
            # a temp name, linked as the lock and removed: link_new's fsync of the folder is the one that counts
            self.shell.write_text(mine, self.record, sync_folder=False)
        except HostError as err:
            raise LockError("cannot create the run lock %s: %s" % (self.path, err)) from err
        try:
            for _ in range(50):
                if self.shell.link_new(mine, self.path):
                    self.held = True
                    self._start_heartbeat()
                    return self
                record, text = self._read(self.path)
                alive, seen = self._holder_alive(record)
                if alive:
                    raise LockError("another hotvcb run holds %s (%s); not starting a second one on this host%s"
                                    % (self.path, record or "holder unknown: %r" % text[:80], _way_out(record, self.run)))
                self._take_over(mine, text, seen)
        except HostError as err:
            raise LockError("cannot take the run lock %s: %s" % (self.path, err)) from err
        finally:
            self.shell.remove_tree(mine)
        raise LockError("could not take the run lock %s (it keeps changing hands)" % self.path)

    def _read(self, path: str):
        try:
            text = self.shell.read_regular(path, RECORD_MAX)
        except HostError:
            text = ""
        return parse(text), text

    def _holder_alive(self, record: Optional[RunId], since: Optional[Reading] = None) -> Tuple[bool, Optional[Reading]]:
        """holder_alive, with a heartbeat dated ahead watched for a beat (clockage.beating: `since` as its), and the
        heartbeat reading that decided (None: the pid did)."""
        by_pid = _by_pid(record, self.run, self.gone)
        if by_pid is not None:
            return by_pid, None
        return beating(lambda: self.shell.age(self.path), STALE_AFTER, HEARTBEAT, since, self._watching)

    def _watching(self, age: float, wait: float) -> None:
        self.log("the run lock %s was last touched %d s ahead of the host's clock (a clock stepped back since?): "
                 "watching it for %d s to tell a live holder from a dead one" % (self.path, -age, wait))

    def _take_over(self, mine: str, stale_text: str, seen: Optional[Reading]) -> None:
        """Take the stale lock (its text `stale_text`; `seen`: the heartbeat reading that judged it) over inside
        the guard, or remove a dead taker's guard and let the caller try again."""
        guard = self.path + ".takeover"
        if not self.shell.link_new(mine, guard):
            taker, judged = self._read(guard)
            gone = judged and (self._taker_gone(taker) or
                               not beating(lambda: self.shell.age(guard), TAKEOVER_STALE, TAKEOVER_STALE)[0])
            if gone:  # a guard that went meanwhile is no dead taker's: a live taker's may stand there next
                # only the guard judged: a live taker may have removed it and put its own there meanwhile
                if self._read(guard)[1] == judged:
                    self.shell.remove_tree(guard)
            time.sleep(0.1)
            return
        try:
            record, text = self._read(self.path)
            # a heartbeat watched a moment ago is compared with (has it moved since?), not watched again
            if text == stale_text and not self._holder_alive(record, seen)[0]:
                self.log("taking over the run lock %s from %s, which is gone" % (self.path, record or "an unknown run"))
                # recorded until a real run has looked for what that run left (a dry run only looks), beside
                # the runs already recorded: one that took a lock over may die before its sweep
                swept = self._swept() + ([(record, time.time())] if record else [])
                self.shell.write_text(self.sweep_path, "".join("%s takeover=%d\n" % (r.text(), at)
                                                               for r, at in swept[-SWEEP_KEEP:]))
                self.shell.remove_tree(self.path)
                self.took_over = True
        finally:
            self.shell.remove_tree(guard)

    def _taker_gone(self, record: Optional[RunId]) -> bool:
        """Whether the takeover guard's record names a run that is gone by its pid (one of this machine whose
        pid tells, or one SSH mode's client found gone): a taker killed inside its takeover, whose guard
        otherwise failed every run for TAKEOVER_STALE ("it keeps changing hands"). A taker whose pid cannot
        tell (another machine, another pid namespace) is judged by the guard's age."""
        if record is None:
            return False
        if record.run in self.gone:
            return True
        return record.same_machine(self.run) and running(record, self.run) is False

    @property
    def sweep_needed(self) -> bool:
        """A run died on this host and nobody has looked for its leftovers yet."""
        try:
            return self.took_over or self.shell.exists(self.sweep_path)
        except (HostError, OSError):
            return True

    def dead_runs(self) -> Tuple[str, ...]:
        """The run ids of the holders whose locks were taken over as gone (by their pid, or by their stale heartbeat
        where the pid cannot tell), while their leftovers are still to be looked for."""
        return tuple(self.takeovers())

    def takeovers(self) -> Dict[str, float]:
        """dead_runs, each with when its lock was taken over (epoch, by the taker's clock): what carries such an
        id and was made before then is a dead run's where its pid cannot tell (jobs/ownership.owner_alive), as in
        another pid namespace it never can; what was made later is the run's own, resumed after a stop. A run SSH
        mode's client found gone by its pid (`gone`) resumes nothing: all it made is a dead run's, however late."""
        return {r.run: float("inf") if r.run in self.gone else at for r, at in self._swept()}

    def _swept(self) -> List[Tuple[RunId, float]]:
        try:
            text = self.shell.read_regular(self.sweep_path, RECORD_MAX)
        except HostError:
            return []  # none taken over, or nothing of ours (a planted FIFO)
        now = time.time()  # an older hotvcb's line says no time: taken over by now, at the latest
        swept = []
        for line in text.splitlines():
            record, at = parse(line), _TAKEN_AT.search(line)
            if record is not None:
                swept.append((record, min(now, float(at.group(1))) if at else now))
        return swept

    def sweep_done(self) -> None:
        self.took_over = False
        try:
            self.shell.remove_tree(self.sweep_path)
        except (HostError, OSError) as err:
            self.log("could not remove %s: %s" % (self.sweep_path, err))

    # -- heartbeat ---------------------------------------------------------
    def watch(self, path: str) -> None:
        """Keep path's mtime fresh while the run lives (a -partial owner file)."""
        self._watched.append(path)

    def unwatch(self, path: str) -> None:
        if path in self._watched:
            self._watched.remove(path)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._beat_loop, name="hotvcb-heartbeat", daemon=True)
        self._beat.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT) and self.check():
            for path in [self.path] + list(self._watched):
                try:
                    self.shell.touch(path)
                except (HostError, OSError):
                    pass  # a missed beat is not an error; ten are a dead run

    def check(self) -> bool:
        """Whether this run still holds its lock. Once another run holds it (this one was stopped past STALE_AFTER
        and the other took it over, or took it when it was deleted), this run is stopped as by SIGTERM
        (interrupt.stop) and False said from then on; a lock that cannot be read is not taken as lost."""
        with self._checking:
            if self.lost_to is None and self.held:
                try:
                    holder = self._holder()
                except (HostError, OSError):
                    return True
                if holder is not None and holder.run != self.run.run:
                    self.lost_to = holder
                    why = ("the run lock %s was taken over by %s: this run was stopped for longer than STALE_AFTER "
                           "(%d s); stopping" % (self.path, holder, STALE_AFTER))
                    self.log(why)
                    interrupt.stop(why)
            return self.lost_to is None

    def _holder(self) -> Optional[RunId]:
        """The lock's holder as its file says (None: not a record), put back first if someone deleted it under us
        (an admin's rm, a reboot script)."""
        try:
            return parse(self.shell.read_regular(self.path, RECORD_MAX))
        except HostError:
            if self.shell.exists(self.path):
                raise  # there, and not readable now: no news
        mine = "%s.%s" % (self.path, self.run.run)
        self.shell.write_text(mine, self.record)
        try:
            if self.shell.link_new(mine, self.path):
                self.log("the run lock %s was deleted while this run held it; put it back" % self.path)
                return self.run
        finally:
            self.shell.remove_tree(mine)
        return parse(self.shell.read_regular(self.path, RECORD_MAX))  # another run's, taken while it was gone

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join(10)
        record, _text = self._read(self.path)
        try:
            if record is not None and record.run == self.run.run:
                self.shell.remove_tree(self.path)
        except HostError as err:
            self.log("could not remove the run lock %s: %s" % (self.path, err))
        self.held = False

    def __enter__(self) -> "HostLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
