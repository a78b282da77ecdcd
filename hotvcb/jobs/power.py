"""Guest power handling for POWER_VM_DOWN_BEFORE_BACKUP and the order keys.

VM_SHUTDOWN_ORDER / VM_STARTUP_ORDER as in ghettoVCB: before any backup the
listed VMs (any VM of the host, whether this run backs it up or not, and
whether or not POWER_VM_DOWN_BEFORE_BACKUP is set) are shut down in that
order; one that will not go down is not backed up (a failed VM). After the
backups they are started, VM_STARTUP_ORDER first. Where we differ: a VM in
VM_STARTUP_ORDER that this run did not power off is left as it is (ghettoVCB
powers it on, even a VM an admin had switched off), with a warning.

ghettoVCB's semantics, with bounded waits: a clean shutdown through VMware
Tools, a hard power off after ITER_TO_WAIT_SHUTDOWN minutes if
ENABLE_HARD_POWER_OFF=1 (at once when the host refused the shutdown request:
no guest was asked; ghettoVCB waits all the same), and giving up on the VM
after POWER_DOWN_TIMEOUT minutes. VM_STARTUP_ORDER, as ghettoVCB's powerOn, waits after starting each VM until its VMware Tools
run (the guest has booted) before the next VM is started, up to POWER_DOWN_TIMEOUT minutes (a VM without
Tools waits that long, then the next starts anyway, as in ghettoVCB; a host that cannot tell, QEMU or
libvirt, is not waited for; a signal ends the waiting, never the starting). A dry run says which VMs the orders would shut down and start again,
and touches none; one whose shutdown request the host will refuse (no VMware
Tools, no hard power off) it fails as the real run does. A VM we powered off is always powered on again, also after errors
and interrupts; from the shutdown request until it is on again a marker in
its folder names our run, so if this run is killed the next run (or
`hotvcb cleanup`) powers it on (jobs/powermark.py), unless someone powered it on
since (the VM's boot stamp, which the marker records, is another): on, or
switched off again by the admin, it is then left as it is; so does this run
when the admin started it and switched it off or suspended it during its backup. A guest still on when its
backup ends may yet finish the shutdown we asked for (no host can take the
request back): its marker stays, so the run that finds it off powers it on;
a run that would shut it down itself takes it over (take_over: backed up off,
powered on after), whether it went off before that run looked or during it.
A shutdown request the host refuses (ESXi: no VMware Tools) with no hard
power off to follow, or whose hard power off the host refuses too, fails the
VM at once and leaves no marker (a request that got no answer, hostd down or
the SSH link dropped, is no refusal: it may have reached the host, so it is
waited for and the marker stays): nothing is going down, and a VM the admin
then switches off must stay off (one off by then went down after all). Nor does a VM seen off and found on again
when its backup ends keep one: someone else powered it on (HA, a colleague),
no request of ours is pending on it, and cleanup must not boot it later in
the middle of the maintenance it is then shut down for.
"""

import time
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Set

from .. import crashpoint, interrupt
from ..errors import CommandFailed, HostError, HotvcbError, TimeoutExpired, Unanswered
from ..hosts.base import Hypervisor, powered
from ..model import Vm, VmRef
from ..runid import RunId
from .ownership import NONE_DEAD
from .powermark import (booted_since_marked, dead_power_mark, drop_power_mark, mark_powered_off, power_marker,
                        power_on_marked, restamp_power_mark)

if TYPE_CHECKING:
    from ..store.lock import HostLock

POLL = 1.0
BOOT_POLL = 2.0  # between `get.guest` calls while a started VM boots (ghettoVCB: 60 s)



def powers_down(settings) -> bool:
    """A backup under `settings` shuts its VM down itself (POWER_VM_DOWN_BEFORE_BACKUP, COLD_SNAPSHOT): a VM a
    gone run left going down is its to take over (PowerControl.take_over), so neither the run's leftover sweep
    nor the VM's leftover check boots it first, only for the backup to shut it down again."""
    return bool(settings.power_vm_down_before_backup or settings.cold_snapshot)

class NotGoingDown(HostError):
    """The VM was never on its way down, so its caller has nothing to power on again: its power-off marker could
    not be written (no shutdown is asked without one: a run stopped then would leave the VM off for good), or
    ShutdownRefused."""


class ShutdownRefused(NotGoingDown):
    """The host refused the guest shutdown (ESXi: no VMware Tools) and no hard power off follows, or the host
    refused that too."""


def _left_running(name: str, why: str, refuses: str = "refused") -> str:
    """The reason of a VM whose guest shutdown the host `refuses` (`why`: its answer) with no hard power
    off to follow; the real run's and the dry run's alike."""
    return ("the host %s to shut down the guest of %s (%s); without ENABLE_HARD_POWER_OFF it is left running "
            "(ignoring it for backup)" % (refuses, name, why))


class PowerControl:
    def __init__(self, host: Hypervisor, log, run: RunId, lock: "Optional[HostLock]" = None, dry_run: bool = False):
        """`lock`: the run's host lock, checked before a VM is powered off (HostLock.check); a dry run
        (`dry_run`) only says what the order keys would do."""
        self.host, self.log, self.run, self.lock, self.dry_run = host, log, run, lock, dry_run
        self._loaded = {}  # type: Dict[str, Vm]  # powered down by shutdown_in_order
        self.ordered_down = []  # type: List[str]  # by shutdown_in_order, to start again
        self.problems = {}  # type: Dict[str, str]  # would not shut down: not backed up, {name: why}
        self._seen_off = set()  # type: Set[str]  # power_marker of each VM power_down saw off
        self.left_down = []  # type: List[str]  # powered off for the order and not on again: the run's first news

    def power_down(self, vm, s) -> None:
        """Shut the guest down, bounded; raises TimeoutExpired when it will not go off, a HostError naming the
        host's refusal when that is why (a hard power off refused), and ShutdownRefused when the host refused
        the shutdown request itself and no hard power off follows, or refused that too: nothing is then under
        way, so the marker goes (cleanup must not power on a VM the admin switches off later) and nothing
        more is waited for; NotGoingDown when its marker cannot be written, before any request."""
        if self.lock is not None and not self.lock.check():  # taken over while this run was stopped
            interrupt.raise_pending()
        self.log.info("Powering off initiated for %s, backup will not begin until VM is off..." % vm.name)
        try:
            mark_powered_off(self.host, vm, self.run, self.log)
        except HotvcbError as err:
            raise NotGoingDown("%s not shut down: its power-off marker cannot be written (%s), and without it nothing "
                               "would power it on again should this run be stopped (ignoring it for backup)"
                               % (vm.name, err)) from err
        crashpoint.reached("powering-down")
        refused = ""  # the host's answer to the shutdown request, when it was no
        try:
            self.host.shutdown(vm)
        except Unanswered as err:  # no answer, not a no (a CommandFailed too): the request may have reached the guest
            self.log.warning("%s: guest shutdown failed (%s)" % (vm.name, err))
        except CommandFailed as err:  # the host answered no (no VMware Tools): the guest was not asked
            refused = self._why_refused(vm, err, s.enable_hard_power_off)
        except HotvcbError as err:  # no answer: the request may have reached the guest
            self.log.warning("%s: guest shutdown failed (%s)" % (vm.name, err))
        start = time.monotonic()
        # no guest was asked when the host refused: nothing for ITER_TO_WAIT_SHUTDOWN to wait for (ghettoVCB,
        # which ignores the refusal, waits it out)
        hard_at = start if refused else start + s.iter_to_wait_shutdown * 60.0
        give_up = start + s.power_down_timeout * 60.0
        hard_done = False
        hard_refused = ""  # the host's answer to the hard power off, the VM's reason if it stays on
        while self.host.power_state(vm) != "off":
            now = time.monotonic()
            if s.enable_hard_power_off and not hard_done and now >= hard_at:
                hard_refused = self._hard_power_off(vm, now - start)
                hard_done = True
                if hard_refused and refused:  # both refused: nothing of ours can take the VM down
                    raise self._refused(vm, "the host refused to shut down the guest of %s (%s) and to power it "
                                            "off (%s); it is left running (ignoring it for backup)"
                                        % (vm.name, refused, hard_refused))
                continue  # its state asked again at once: it may be off now
            if now >= give_up:
                if hard_refused:
                    raise HostError("hard power off of %s failed (%s), and its guest did not shut down within "
                                    "%d s (ignoring it for backup)" % (vm.name, hard_refused, now - start))
                raise TimeoutExpired("%s to power off (ignoring it for backup)" % vm.name, now - start)
            if interrupt.pending():
                interrupt.raise_pending()
            time.sleep(POLL)
        self._seen_off.add(power_marker(vm))
        # its stamp read again now that it is off: the one read while it ran may be gone without a power on (a
        # vmware.log rotated by log.rotateSize while the guest shut down), as take_over's marker is made anew
        restamp_power_mark(self.host, vm, self.log)
        self.log.info("%s is powered off" % vm.name)

    def _why_refused(self, vm, err: CommandFailed, hard: bool) -> str:
        """The host's refusal of the shutdown request (`err`), for a hard power off (`hard`) to follow; "" when
        the VM went off between our look and our request, which the host then refuses (no VMware Tools run
        in a VM that is off): a gone run's shutdown finishing (take_over), or someone's. It is off, as this run
        wanted, and on again after its backup. Without a hard power off, ShutdownRefused."""
        if self._gone_off(vm):
            self.log.info("%s went off before its shutdown request reached the host (a shutdown asked for "
                          "earlier finishing)" % vm.name)
            return ""
        if not hard:
            raise self._refused(vm, _left_running(vm.name, str(err)))
        self.log.warning("%s: guest shutdown refused (%s); a hard power off follows" % (vm.name, err))
        return str(err)

    def _gone_off(self, vm) -> bool:
        """Whether a VM the host has just refused a request for is off (the reason it refused); a state query
        that fails (hostd slow a moment) counts as "not off", so the host's refusal stands as the VM's reason
        (and ShutdownRefused takes its marker away) instead of the query's error."""
        try:
            return self.host.power_state(vm) == "off"
        except HotvcbError as err:
            self.log.warning("%s: power state unknown after the host's refusal (%s); taken as still on"
                             % (vm.name, err))
            return False

    def _refused(self, vm, why: str) -> ShutdownRefused:
        """The VM is not going down (the host refused every request): its marker goes, so that no run nor
        cleanup powers it on after the admin switches it off; the error to raise, naming `why`."""
        drop_power_mark(self.host, vm, self.log)
        return ShutdownRefused(why)

    def _hard_power_off(self, vm, waited: float) -> str:
        """ENABLE_HARD_POWER_OFF's power off; the host's refusal, or "" when it did it or may yet do it. Only
        the host's no (a CommandFailed) is a refusal: a power off that got no answer (hostd down, the SSH
        link dropped) may have reached hostd, which then powers the VM off after we are gone, so it is
        waited for until POWER_DOWN_TIMEOUT, its marker kept, as an unanswered shutdown request is. A
        guest that finishes its own shutdown as the power off is sent makes the host refuse it (already
        off): not a refusal either."""
        try:
            self.host.power_off(vm)
        except Unanswered as err:  # no answer (a CommandFailed too)
            self._unanswered(vm, err)
            return ""
        except CommandFailed as err:  # the host answered no
            if self._gone_off(vm):
                self.log.info("%s went off by its own shutdown as the hard power off was sent" % vm.name)
                return ""
            self.log.error("%s: hard power off failed: %s" % (vm.name, err))
            return str(err)
        except HotvcbError as err:  # no answer (ConnectionLost, ...)
            self._unanswered(vm, err)
            return ""
        # ghettoVCB's line, said only once the host did it: a log watcher reads it as done
        self.log.info("Hard power off occured for %s, waited for %d seconds" % (vm.name, waited))
        return ""

    def _unanswered(self, vm, err: HotvcbError) -> None:
        """The hard power off got no answer (`err`): said, and waited for."""
        self.log.warning("%s: hard power off got no answer (%s); the host may still power it off: waiting for "
                         "it to go off (POWER_DOWN_TIMEOUT)" % (vm.name, err))

    def restore_on(self, vm, boot_wait: float = 0.0) -> bool:
        """Start a VM we asked to shut down, unless it never went off (a timed-out shutdown), or someone powered
        it on since (its boot stamp, the marker's rule: powermark.booted_since) and it is off or suspended now:
        the admin's last word, as a gone run's marker leaves it; one it powers on is then given up to
        `boot_wait` seconds to boot (await_boot).

        True when nothing is left for this run to power on: the VM is on again, or left as the admin left it.
        """
        try:
            state = self.host.power_state(vm)
        except HotvcbError as err:
            self.log.error("%s: power state unknown (%s); start it by hand if it is off" % (vm.name, err))
            return False
        if state == "on" and power_marker(vm) in self._seen_off:
            # it went off, and someone (HA, a colleague) powered it on since: no request of ours is pending
            self._seen_off.discard(power_marker(vm))
            self.log.warning("%s was powered on again by someone else during its backup (it had gone off for it); "
                             "this run leaves it as it is" % vm.name)
            drop_power_mark(self.host, vm, self.log)
            return True
        if state == "on":
            # the guest was asked to shut down and may still finish it after we are gone: the marker stays
            # (as after kill -9), so whichever run finds the VM off powers it on (powermark.restore_power)
            self.log.info("%s is still powered on; its guest was asked to shut down and may still go off: the "
                          "next run (or `hotvcb cleanup`) powers it on again if it does" % vm.name)
            return True
        if booted_since_marked(self.host, vm, self.log):
            self._seen_off.discard(power_marker(vm))
            self.log.warning("%s was powered on by someone during its backup, after this run powered it off, and is "
                             "%s now: this run leaves it as it is" % (vm.name, powered(state)))
            drop_power_mark(self.host, vm, self.log)
            return True
        if not self.power_on(vm):
            return False  # the marker stays: the next run tries again
        self._seen_off.discard(power_marker(vm))
        drop_power_mark(self.host, vm, self.log)
        if boot_wait > 0:
            self.await_boot(vm, boot_wait)
        return True

    def await_boot(self, vm, limit: float) -> None:
        """Wait up to `limit` seconds for the guest's VMware Tools to run, ghettoVCB's sign that a VM of
        VM_STARTUP_ORDER has booted and the next may start (its powerOn polled `get.guest` while it said
        toolsNotRunning, POWER_DOWN_TIMEOUT times 60 s). Never raises: a signal, a host that cannot tell or
        a failed query ends the wait, and the next VM is started all the same."""
        start = time.monotonic()
        said = False
        while True:
            try:
                running = self.host.guest_tools(vm)
            except HotvcbError as err:
                self.log.warning("%s: cannot tell whether it has booted (%s); starting the next VM" % (vm.name, err))
                return
            waited = time.monotonic() - start
            if running is None:  # QEMU, libvirt: the host cannot tell, so there is nothing to wait for
                return
            if running:
                if said:
                    self.log.info("%s has booted (VMware Tools run after %d seconds)" % (vm.name, waited))
                return
            if not said:
                self.log.info("Waiting for %s to boot (its VMware Tools to run) before the next VM of "
                              "VM_STARTUP_ORDER, up to %d seconds" % (vm.name, limit))
                said = True
            if waited >= limit:
                self.log.warning("Unable to detect started tools on %s, waited for %d seconds; starting the next "
                                 "VM anyway" % (vm.name, waited))
                return
            if interrupt.pending():
                self.log.warning("%s: not waiting for it to boot: the run was interrupted; starting the next VM"
                                 % vm.name)
                return
            until = time.monotonic() + min(BOOT_POLL, limit - waited)
            while time.monotonic() < until and not interrupt.pending():  # a signal is heard within 0.1 s
                time.sleep(0.1)

    def power_on(self, vm) -> bool:
        """The VM powered on (its marker saying so first: powermark.power_on_marked); False, said, if it failed."""
        try:
            self.log.info("Powering on %s" % vm.name)
            power_on_marked(self.host, vm, self.log)
            return True
        except HotvcbError as err:
            self.log.error("%s: could NOT be powered on again: %s -- start it by hand" % (vm.name, err))
            return False

    def shutdown_in_order(self, targets, settings, refused: Optional[Mapping[str, str]] = None,
                          dead: Mapping[str, float] = NONE_DEAD) -> None:
        """VM_SHUTDOWN_ORDER: power those VMs down, in that order, before any backup; not those `refused`
        ({name: why}: their backup is refused before it starts, so they stay up). One found off that a gone
        run had asked to shut down is started with the others (_adopt); `dead`: as powermark.restore_power's.

        Each is in `ordered_down` from its shutdown request on, so an interrupt
        halfway still starts every VM that went down (start_in_order in finally).
        A dry run says which VMs it would shut down and puts them there all the same
        (none is touched): its backups and its startup order then are the run's.
        """
        if not settings.vm_shutdown_order:
            return
        if not self.host.powers_on:
            raise HotvcbError("VM_SHUTDOWN_ORDER shuts VMs down, and this %s host cannot start them again"
                              % self.host.kind)
        by_name = {t.name: t for t in targets if isinstance(t, VmRef)}  # type: Dict[str, VmRef]
        backed_up = set(by_name)  # the others of the order are only shut down, never backed up
        if any(n not in by_name for n in settings.vm_shutdown_order):
            for listed in self.host.list_vms():
                by_name.setdefault(listed.name, listed)
        down = self.ordered_down
        for name in settings.vm_shutdown_order:
            ref = by_name.get(name)
            if ref is None:
                self.log.warning("VM_SHUTDOWN_ORDER names %r, which is not on this host" % name)
                continue
            if refused and name in refused:
                self.log.warning("%s: not shut down for VM_SHUTDOWN_ORDER: its backup is refused (%s)"
                                 % (name, refused[name]))
                continue
            vm = self.host.load_vm(ref)
            if self.host.power_state(vm) != "on":
                self._adopt(name, vm, dead)
            elif self.dry_run:
                self._would_shut_down(name, vm, settings, name in backed_up)
            else:
                down.append(name)  # asked to go down: brought back up after the backups
                self._loaded[name] = vm
                try:
                    self.power_down(vm, settings)
                except HotvcbError as err:
                    if isinstance(err, NotGoingDown):  # never on its way down: nothing to start again
                        down.remove(name)
                    self._not_down(name, str(err), name in backed_up)

    def _not_down(self, name: str, why: str, backed_up: bool) -> None:
        """A VM of the order that did not (a dry run: would not) shut down, `why`: one this run backs up
        (`backed_up`) fails, its turn's reason in the report and the mail; another is only warned of."""
        if not backed_up:
            self.log.warning("%s: did not shut down for VM_SHUTDOWN_ORDER: %s; this run does not back it up"
                             % (name, why))
            return
        self.problems[name] = why
        self.log.error("%s: %s; it will not be backed up" % (name, why))

    def _would_shut_down(self, name: str, vm, settings, backed_up: bool) -> None:
        """A dry run's turn of the order for a VM that is on: said, and put in `ordered_down` to be said
        started again; unless the real run's shutdown request will be refused (no VMware Tools, no hard
        power off to follow: power_down's ShutdownRefused), which fails it as that run does, so the dry
        run exits with that run's code."""
        refusal = "" if settings.enable_hard_power_off else self._tools_refusal(vm)
        if refusal:
            self._not_down(name, refusal, backed_up)
            return
        self.ordered_down.append(name)
        self._loaded[name] = vm
        self.log.dryrun("VM_SHUTDOWN_ORDER: would shut %s down before the backups" % name)

    def _tools_refusal(self, vm) -> str:
        """Why the host will refuse the guest shutdown of `vm` (VMware Tools does not run in it), in the real
        run's words; "" when it will not, or cannot tell (QEMU, libvirt; a failed query, warned of)."""
        try:
            running = self.host.guest_tools(vm)
        except HotvcbError as err:
            self.log.warning("%s: cannot ask whether VMware Tools is running (%s); if it is not, the real run's "
                             "shutdown for VM_SHUTDOWN_ORDER will be refused" % (vm.name, err))
            return ""
        if running is not False:
            return ""
        return _left_running(vm.name, "VMware Tools is not running in this virtual machine", "will refuse")

    def _adopt(self, name: str, vm, dead: Mapping[str, float]) -> None:
        """A VM of the order found off with a gone run's power-off marker (take_over): this run would have
        shut it down now, so it is this run's to start again with the order, after the backups. Its own
        backup's leftover check (vm_leftovers.clear_dead_runs) leaves the power of the order's VMs alone: it
        is backed up off, in a dry run too, which leaves the marker as it is."""
        if self.take_over(vm, dead, "the backups"):
            self.ordered_down.append(name)
            self._loaded[name] = vm

    def take_over(self, vm, dead: Mapping[str, float], after: str) -> bool:
        """A VM found off with a gone run's power-off marker: that run asked its guest to shut down and was
        stopped (a signal, a kill) before it went off; the guest finished meanwhile, before this run looked or
        during its steps. This run would have shut it down itself (VM_SHUTDOWN_ORDER, or its backup's
        POWER_VM_DOWN_BEFORE_BACKUP / COLD_SNAPSHOT), so the VM is this run's to power on, `after` its work,
        as one it powered off (not booted now only to be shut down again; nor, off by the time the backup
        looks, backed up as a VM the admin switched off and left off). Its marker is made this run's, so a
        kill meanwhile leaves it to the next run or `hotvcb cleanup`. False when no gone run's marker is
        there: off by the admin's choice (or a live run's), left as it is."""
        who = dead_power_mark(self.host, vm, self.log, self.run, dead, self.dry_run)
        if who is None:
            return False
        if not self.dry_run:
            try:
                mark_powered_off(self.host, vm, self.run, self.log)
                self._seen_off.add(power_marker(vm))  # found on after its backup: someone else started it
            except HotvcbError as err:  # the gone run's marker stays: this run or the next powers it on
                self.log.warning("%s: could not mark it as this run's (%s); should this run stop before it "
                                 "powers it on, the next run does" % (vm.name, err))
        self.log.warning("%s: %s powered it off for a backup and is gone; it is off: %s it on after %s"
                         % (vm.name, who, "would power" if self.dry_run else "powering", after))
        return True

    def start_in_order(self, settings) -> None:
        """VM_STARTUP_ORDER first, then any other VM we powered down."""
        names = self.ordered_down
        for n in settings.vm_startup_order:
            if n not in names:
                self.log.warning("VM_STARTUP_ORDER names %r, which this run did not power off; leaving it as it is" % n)
        order = [n for n in settings.vm_startup_order if n in names]
        ordered = len(order)
        order += [n for n in names if n not in order]
        for i, name in enumerate(order):
            # a VM of VM_STARTUP_ORDER boots before the next starts; nothing waits on the last to start
            boot_wait = settings.power_down_timeout * 60.0 if i < ordered and i + 1 < len(order) else 0.0
            if self.dry_run:
                self.log.dryrun("VM_STARTUP_ORDER: would power %s on again after the backups%s" % (
                    name, ", and wait for it to boot before the next" if boot_wait else ""))
            elif not self.restore_on(self._loaded[name], boot_wait if not interrupt.pending() else 0.0):
                self.left_down.append(name)
        del self.ordered_down[:]
