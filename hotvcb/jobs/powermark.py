"""The power-off marker: a VM a run powered off for its backup, and whether a gone run's marker still powers it on.

From its shutdown request until it is on again, a VM a run shuts down (POWER_VM_DOWN_BEFORE_BACKUP, COLD_SNAPSHOT,
VM_SHUTDOWN_ORDER: jobs/power.py) has a marker in its folder, `.hotvcb-powered-off.<vmx file name>` (one per VM: a
folder may hold several). Its first line is the run's record (runid.py), its second what tells whether the VM was
powered on by anyone since. The run that lives powers the VM on and removes it; a gone run's is the next run's or
`hotvcb cleanup`'s (restore_power), or taken over by a run that shuts the VM down itself (PowerControl.take_over).

The stamp rule, one for a live run (PowerControl.restore_on) and a gone run's marker alike (booted_since), by the
marker's second line:
- `stamp <digest>[ host <time>][ log <digest>]`: the VM's boot stamp (Hypervisor.boot_stamp) as the shutdown was
  asked, taken again once the run sees the VM off (a stamp that moved while the guest went down is no one's power
  on): its process (digested), the host's boot it started in where the host says it (base.stamp_parts: ESXi's vmx
  pid may be given again after a reboot), and, in a stamp taken with the VM off, the first line of the log its
  process began (digested; ESXi's vmware.log header). That line, where the VM's now says it too, decides alone:
  no process runs while the VM is off to begin or rotate its log, so no clock or reboot can make the same line
  another power on, nor another line none. Else another stamp now (another process, or the same in another host
  boot, both sides saying theirs, their times more than base.BOOT_SLACK apart: a clock step moves a bootTime
  hostd derives from the clock; a process of an earlier boot than the host's current one says none, the VM not
  powered on since the reboot; nor does a marker without ` host`, an older hotvcb's): someone powered it on
  since (by hand, HA), and whatever it is now, on, switched off again or suspended, is the admin's last word:
  left as it is, the marker removed. A stamp of NO_BOOT_STAMP now tells no power on (a power on always
  leaves one: its log was deleted or rotated away), nor does a FAILED_START (the VM's last start failed: a disk
  locked during the copy; whoever asked it wanted the VM on, so it is powered on).
- `power on asked`: written before each power on of ours (power_on_marked), since one that fails may start the
  VM's vmx, and a new stamp with it, before it gives up: one on has nothing of ours pending (it was off before
  that request): the marker goes. A third line, `stamp <digest>`, records the stamp as it was before the request:
  a VM found off whose stamp is another and a start that succeeded (our request's, answered to a run killed
  meanwhile) was switched off since by someone (the admin's off stands, by the rule above); the same stamp, or
  a start that failed, is powered on again. Without it (the host could not say it) a VM off is powered on.
- none: nothing tells (the host cannot say the VM's stamp, the run said so; a cold snapshot that starts the VM
  itself; a hotvcb before this rule, whose `boot <digest>` line digested a whole log line): the VM is powered on
  whatever happened since, as before stamps.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional, Tuple

from .. import lazyre
from ..clockage import heartbeat
from ..errors import CommandFailed, HotvcbError, Unanswered
from ..hosts.base import Hypervisor, powered_on_by, same_boot, stamp_parts, utc
from ..runid import RECORD_MAX, RunId, parse
from .leftovers import UNTOLD, vm_marker
from .ownership import NONE_DEAD, made_at, owner_alive

POWER_MARKER = ".hotvcb-powered-off"  # + ".<vmx file name>", in the VM's folder while we hold it powered off
STAMP = "stamp "  # starts the marker's second line: the VM's boot stamp (a digest) at its power off
POWER_ON_ASKED = "power on asked"  # the marker's second line from our power on request until the marker goes
HOST_BOOT = " host "  # then the host's boot the stamp's process started in (its UTC time), where the host says it
LOG_BEGUN = " log "  # then the digest of the first line of the process's log, in a stamp taken with the VM off
_DIGEST = r"[0-9a-f]{32}"  # a marker's digest (_digest); a hotvcb of adaf125 recorded the host's boot so too
_STAMPED = lazyre.compile(r"^" + STAMP + "(" + _DIGEST + ")(?:" + HOST_BOOT + r"(\S+))?(?:" + LOG_BEGUN + "("
                          + _DIGEST + "))?$", re.M)
SHUTDOWN_GRACE = 30 * 60.0  # a guest asked to shut down may take this long (a marker this young is kept)


def power_marker(vm) -> str:
    """One per VM, named after its .vmx: a folder may hold several VMs, which BACKUP_PARALLEL powers
    down at once (one VM's end must not erase another's marker, nor a marker power on its neighbour)."""
    return vm_marker(vm, POWER_MARKER)


def mark_powered_off(host: Hypervisor, vm, run: RunId, log) -> None:
    """The marker naming `run`, and the VM's boot stamp as it is now (its power off keeps it); a stamp the host
    cannot say is said in `log`: the marker then powers the VM on whatever happens meanwhile. Raises when the
    marker cannot be written."""
    line, why = _stamp_line(host, vm)
    if not line:
        log.warning("%s: hotvcb cannot tell whether someone powers it on while it is off for its backup (%s): "
                    "should this run be stopped before it powers it on, the next run or `hotvcb cleanup` powers "
                    "it on, even if someone started it and switched it off meanwhile" % (vm.name, why))
    host.shell.write_text(power_marker(vm), run.text() + "\n" + line)


def restamp_power_mark(host: Hypervisor, vm, log) -> None:
    """The marker made to record the VM's boot stamp as it is now: once the run sees it off, and after a power on
    of ours the host refused (a disk missing: the vmx started, and its log with it, before it gave up), else the
    next run would take either for someone's power on and leave the VM off."""
    _rewrite(host, vm, log, _stamp_line(host, vm, off=True)[0])


def unstamp_power_mark(host: Hypervisor, vm, log) -> None:
    """The marker's stamp removed before a step of ours that may start the VM (a cold snapshot: libvirt starts a
    shut-down domain paused for its backup job), so a kill meanwhile leaves a marker that powers it on whatever
    its stamp."""
    _rewrite(host, vm, log, "")


def _rewrite(host: Hypervisor, vm, log, line: str) -> None:
    """The marker's second line made `line`, its run's record kept; one that cannot be is said, not raised: the
    run goes on with the VM, and only its stamp may be misjudged should the run be stopped. A marker gone (removed
    by hand) is not said here: the run's own look at it before its power on (booted_since_marked) says so, once."""
    path = power_marker(vm)
    try:
        record = host.shell.read_regular(path, RECORD_MAX).split("\n", 1)[0]
        host.shell.write_text(path, record + "\n" + line)
    except HotvcbError as err:
        if _gone(host, path):
            return
        log.warning("%s: could not update its boot stamp in %s (%s); should the next run find it off, it may "
                    "take it as started by someone else and leave it off" % (vm.name, path, err))


def _gone(host: Hypervisor, path: str) -> bool:
    """Whether the marker at `path` is known to be gone (False where even that cannot be told)."""
    try:
        return not host.shell.exists(path)
    except HotvcbError:
        return False


def power_on_marked(host: Hypervisor, vm, log) -> None:
    """Power on a VM of a marker (ours or a gone run's), the marker saying so first, with the stamp before the
    request: a request that fails, or whose answer a killed run never hears, may have started the vmx and its
    stamp, which must not pass for someone's power on, nor an off the admin gives after it for nothing. One the
    host answered no (a CommandFailed: the vmx gave up; libvirtd not reached, nothing asked) records the stamp it
    left, the VM found not on, and raises; one that got no answer (Unanswered: hostd down, libvirtd lost under
    it, the tool killed by a signal; a lost link, a timeout: as power_down tells them) may still start the VM,
    so its marker keeps saying `power on asked`, and it raises."""
    _rewrite(host, vm, log, POWER_ON_ASKED + "\n" + _stamp_line(host, vm, off=True)[0])
    try:
        host.power_on(vm)
    except Unanswered:  # no answer (hostd down, libvirtd lost under it, a tool killed), though a CommandFailed
        raise
    except CommandFailed:
        if not _found_on(host, vm):
            restamp_power_mark(host, vm, log)
        raise


def _found_on(host: Hypervisor, vm) -> bool:
    """Whether a VM whose power on the host answered no is on all the same, or cannot be told not to be: that
    answer was none (our request started it), so its marker keeps `power on asked`, not the stamp our start
    left, which would pass for the VM's stamp with it off and override the admin's later off."""
    try:
        return host.power_state(vm) == "on"
    except HotvcbError:
        return True


def _stamp_line(host: Hypervisor, vm, off: bool = False) -> Tuple[str, str]:
    """The marker's line naming the VM's boot stamp, its parts apart (stamp_parts): its process (a digest: the
    stamp is the host's text), the host's boot as its time (a time within BOOT_SLACK is the same boot: a clock
    step moves it), and, where the caller knows the VM `off` (no process runs to rotate its log), the digest of its
    log's first line; and "". Or "" where the host cannot tell, and why: the marker then powers the VM on whatever
    happened since."""
    try:
        process, boot, begun = stamp_parts(host.boot_stamp(vm))
    except (HotvcbError, OSError) as err:  # OSError: a log the driver could not read (libvirt's, not ours to read)
        return "", str(err)
    if boot and (utc(boot) is None or " " in boot):  # no time: its digest, compared as is
        boot = _digest(boot)
    return "%s%s%s%s\n" % (STAMP, _digest(process), HOST_BOOT + boot if boot else "",
                            LOG_BEGUN + _digest(begun) if begun and off else ""), ""


def _digest(stamp: str) -> str:
    import hashlib  # a power-off marker's, not every run's start (tests/test_startup_imports.py)

    return hashlib.sha256(stamp.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def booted_since(host: Hypervisor, vm, marker: str, log=None) -> bool:
    """The stamp rule (this module's docstring): whether the VM has been powered on by anyone since its power-off
    `marker` (the file's text) was written: its boot stamp is another than the one recorded. False where that
    cannot be told, and the marker stands: no stamp recorded (our power on asked, an older hotvcb's marker, a host
    that could not say it), none now (NO_BOOT_STAMP), a start that failed (FAILED_START: no power on, and the last
    word of whoever asked it was "on"), or the host cannot say the stamp now (said in `log`)."""
    recorded = _STAMPED.search(marker)
    if recorded is None:
        return False
    try:
        now = host.boot_stamp(vm)
        return powered_on_by(now) and _another(stamp_parts(now), recorded.group(1), recorded.group(2),
                                               recorded.group(3))
    except (HotvcbError, OSError) as err:  # OSError: a log the driver could not read
        if log is not None:
            log.warning("%s: cannot tell whether it was powered on since its power-off marker was written (%s); "
                        "taking it as not" % (vm.name, err))
        return False


def _another(now: Tuple[str, str, str], process: str, boot: Optional[str], begun: Optional[str]) -> bool:
    """Whether the stamp `now` (its process, its host boot, its log's first line) tells another power on than the
    recorded ones (the process's digest; the host boot, None where the marker has none; the log's first line's
    digest, None where the stamp was not taken with the VM off). That line, where both sides say it, decides
    alone: no process ran while the VM was off to begin or rotate its log, so the same line is no power on and
    another is one, whatever the host's clock or boots did. Else another process, or the same pid started in
    another boot of the host (a reboot gave it again). A host boot either side does not tell is no other: the
    process of an earlier boot than the host's current one says none (the host rebooted, the VM not powered on
    since), nor does a marker of a hotvcb before host boots were recorded (or that the host could not say)."""
    if begun and now[2]:
        return _digest(now[2]) != begun
    if _digest(now[0]) != process:
        return True
    return bool(now[1] and boot and not _same_boot(now[1], boot))


def _same_boot(now: str, recorded: str) -> bool:
    """Whether the host boot `now` is the recorded one: within BOOT_SLACK of its time (hosts/base.same_boot); a
    digest (adaf125's markers, a boot that is no time) only where it is the very same text."""
    return _digest(now) == recorded if re.fullmatch(_DIGEST, recorded) else same_boot(now, recorded)


def booted_since_marked(host: Hypervisor, vm, log) -> bool:
    """booted_since for a VM of the live run, by the marker in its folder; False where it cannot be read."""
    try:
        return booted_since(host, vm, host.shell.read_regular(power_marker(vm), RECORD_MAX), log)
    except HotvcbError as err:
        gone = _gone(host, power_marker(vm))
        log.warning("%s: %s; taking it as not powered on since" % (
            vm.name, "its power-off marker is gone (removed by hand?)" if gone else
            "cannot read its power-off marker (%s)" % err))
        return False


def drop_power_mark(host: Hypervisor, vm, log) -> None:
    """A marker that no longer powers anything on removed (the VM is on, or left as the admin left it, and nothing
    of ours is pending on it); one that cannot be (a read-only datastore) is said, not raised: the backup or cleanup
    that found it goes on, and the next run judges it again by its stamp."""
    try:
        host.shell.remove_tree(power_marker(vm))
    except HotvcbError as err:
        log.warning("%s: could not remove its power-off marker (%s); should the VM be off later, the next run or "
                    "`hotvcb cleanup` powers it on, unless its boot stamp says it was powered on since"
                    % (vm.name, err))


def dead_power_mark(host: Hypervisor, vm, log, run: RunId, dead: Mapping[str, float] = NONE_DEAD,
                    dry_run: bool = False) -> Optional[str]:
    """Who left the VM's power-off marker, when that run is gone (restore_power; a VM of VM_SHUTDOWN_ORDER found
    off, jobs/power.py); None when there is none, it is `run`'s own or a live run's, or cannot be read or told
    (said: the VM may be down for good); None too when the VM has been powered on since (booted_since): the
    admin's last word stands, whether the VM is on or off now, and the marker goes (not in a dry run)."""
    found = _gone_runs_mark(host, vm, log, run, dead, dry_run)
    return None if found is None else found[0]


def _gone_runs_mark(host: Hypervisor, vm, log, run: RunId, dead: Mapping[str, float],
                    dry_run: bool) -> Optional[Tuple[str, str]]:
    """dead_power_mark's, with the marker's text: (who, text)."""
    path = power_marker(vm)
    if not host.shell.exists(path):
        return None
    try:
        text = host.shell.read_regular(path, RECORD_MAX)
    except HotvcbError as err:  # not ours (we write a file): a FIFO planted on an NFS datastore, a folder
        log.warning("%s: cannot read the power-off marker: %s; leaving the VM as it is" % (vm.name, err))
        return None
    owner = parse(text)
    if owner is not None and owner.run == run.run:
        return None
    alive = owner_alive(owner, run, dead, lambda: made_at(host.shell.age(path))) if owner is not None else False
    if alive:
        return None  # its run lives (its lock file was deleted under it): it powers the VM on itself
    who = str(owner) if owner else "an earlier hotvcb run"
    if alive is None:
        log.warning("%s: %s powered it off for a backup and %s; leaving it as it is (now %s)"
                    % (vm.name, owner, UNTOLD, host.power_state(vm)))
        return None
    if booted_since(host, vm, text, log):
        log.warning("%s: %s powered it off for a backup and is gone, and it was powered on since the run that left "
                    "it off: leaving it as it is%s"
                    % (vm.name, who, "" if dry_run else ", its power-off marker removed"))
        if not dry_run:
            drop_power_mark(host, vm, log)
        return None
    return who, text


def state_had(host: Hypervisor, vm, log, run: RunId, dry_run: bool = False,
              dead: Mapping[str, float] = NONE_DEAD, own_power: bool = False) -> str:
    """The VM's power state as BACKUP_POWER_STATE judges it: the one it had before a dead run powered it off
    for a backup, not the one that run left it in. Without `own_power` that VM is powered on now
    (restore_power); with it (its backup shuts it down itself: power.powers_down) it is judged "on" and left
    off, for its backup to take over (PowerControl.take_over) and power on after: not booted here only to
    be shut down again."""
    if not own_power:
        restore_power(host, vm, log, run, dry_run, dead)
        return host.power_state(vm)
    state = host.power_state(vm)
    if state == "off" and dead_power_mark(host, vm, log, run, dead, dry_run) is not None:
        return "on"
    return state


def restore_power(host: Hypervisor, vm, log, run: RunId, dry_run: bool = False,
                  dead: Mapping[str, float] = NONE_DEAD) -> bool:
    """Power on a VM that a dead run powered off for its backup; True if there was one. Its marker goes once
    nothing of that run is pending on the VM; one that cannot be removed is a warning (drop_power_mark)."""
    found = _gone_runs_mark(host, vm, log, run, dead, dry_run)
    if found is None:
        return False
    who, text = found
    state = host.power_state(vm)
    if dry_run:
        log.info("%s: %s powered it off for a backup and did not finish; would power it on (now %s)" % (vm.name, who, state))
        return True
    if state == "on":
        if _may_still_go_down(host, vm, log, who, text):
            return True
        log.info("%s: %s powered it off for a backup and did not finish; it is on again" % (vm.name, who))
    else:
        log.warning("%s: %s powered it off for a backup and did not finish; powering it on%s"
                    % (vm.name, who, "" if _STAMPED.search(text) or _asked(text) else
                       " (its marker holds no boot stamp: whether someone powered it on since cannot be told)"))
        power_on_marked(host, vm, log)
    drop_power_mark(host, vm, log)
    return True


def _asked(marker: str) -> bool:
    """Whether the marker's text says a power on of ours was asked (power_on_marked)."""
    return POWER_ON_ASKED in marker.split("\n")[1:2]


def _may_still_go_down(host: Hypervisor, vm, log, who: str, marker: str) -> bool:
    """Whether a gone run's VM found on may still be going down from its shutdown request (SHUTDOWN_GRACE): its
    marker is then kept, so the run that finds it off powers it on. Not once that run asked its power on: the VM
    was off by then."""
    if _asked(marker):
        return False
    age = host.shell.age(power_marker(vm))
    # dated ahead: its age cannot be told, and a marker kept for as long would power on a VM the admin shuts
    # down meanwhile; the guest is on, so taken as having had its grace
    if not (heartbeat(age, SHUTDOWN_GRACE) and age is not None):
        return False
    log.info("%s: %s asked it to shut down %d s ago and is gone; it is still on, looking again next time"
             % (vm.name, who, max(0.0, age)))
    return True
