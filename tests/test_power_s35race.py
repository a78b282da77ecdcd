"""Round s35: a power-down run stopped after it asked the guest to shut down, and the next run started while
that guest is still going down.

POWER_VM_DOWN_BEFORE_BACKUP=1 backs web up powered off. Tonight's run asks web's guest to shut down
(vim-cmd vmsvc/power.shutdown) and is stopped (SIGTERM from a maintenance script, or SIGKILL) before web is
off; its power-off marker stays, naming it. The next run starts while web's guest is still going down. Web
was running before both runs, so it must be running after the next one: that run takes the gone run's VM
over (jobs/power.py, PowerControl.take_over) and powers it on after its backup, whenever web goes off —
before the run looks, during its steps, or as it sends its own shutdown request. The guest slow to shut down
is esxisim's `power.shutdown=ignore` for the stopped run, and `vim-cmd vmsvc/power.off` (off_now) when the
test has the guest finish that shutdown: at the moment each test names, not after a delay a loaded machine
stretches."""

import os
import signal

import pytest

from esxisim import proclog
from gates import held, stopped
from simhost import backup_once, good, hotvcb, hotvcb_background, needs_root, next_second, power, vim, write_conf

pytestmark = needs_root

SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


def stopped_going_down(host, tmp_path, conf, sig):
    """web created running, a run of `conf` stopped by `sig` right after it asked web's guest to shut down,
    which is still going down (off_now ends it). Returns (web's vmid, the stopped run's output)."""
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    host.set_fault("power.shutdown", "ignore")
    rc, out = stopped(host, tmp_path, "vim-cmd", "vmsvc/power.shutdown*", "after", ("backup", "-m", "web", "-g", conf),
                      SIGNALS[sig])
    host.clear_faults()
    assert "Traceback" not in out, out
    if sig == "TERM":
        assert rc == 2, (rc, out)
    assert "Powered on" in power(host, vmid), out
    return vmid, out


def off_now(vmid):
    """The sh command that has web's guest finish the shutdown the gone run asked for."""
    return "vim-cmd vmsvc/power.off %s >/dev/null" % vmid


def shutdowns_since(host, mark):
    """The vim-cmd power requests (not state queries) sent after `mark` entries of the process log."""
    asked = [e["args"][0] for e in proclog.read(host)[mark:] if e["event"] == "start" and e["args"]]
    return [a for a in asked if a in ("vmsvc/power.on", "vmsvc/power.off", "vmsvc/power.shutdown")]


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_vm_going_off_during_the_next_run_is_powered_on_by_it(host, tmp_path, sig):
    """The next run sees web still on (its leftover check keeps the gone run's marker: the guest may still be
    going down), and web goes off before that run's power-down step (here: while its pre-backup hook runs).
    It was left OFF: the run backed it up as a VM the admin had switched off. It is the gone run's VM, taken
    over: backed up off and powered on after its backup."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, out = stopped_going_down(host, tmp_path, conf, sig)
    conf2 = write_conf(host, name="next.conf", POWER_VM_DOWN_BEFORE_BACKUP=1, PRE_BACKUP_HOOK=off_now(vmid))
    nxt = backup_once(host, conf2, "web")
    assert nxt.returncode == 0, out + "\n--- next ---\n" + nxt.stdout + nxt.stderr
    assert "Powered on" in power(host, vmid), nxt.stdout
    assert len(good(host, conf2, "web")) == 1, nxt.stdout
    assert not os.path.exists(host.real("/vmfs/volumes/datastore1/web/.hotvcb-powered-off.web.vmx")), nxt.stdout


def test_vm_already_off_is_taken_over_not_booted_and_shut_down_again(host, tmp_path):
    """web went off (the gone run's request finished) before the next run looked. That run powered it on
    only to shut it down again for its backup (a boot and a shutdown more of a production VM, and the
    shutdown refused should the guest's Tools not run yet); it takes it over instead: backed up off,
    powered on once, after its backup."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, out = stopped_going_down(host, tmp_path, conf, "TERM")
    vim(host, "vmsvc/power.off", vmid)
    mark = len(proclog.read(host))
    nxt = backup_once(host, conf, "web")
    assert nxt.returncode == 0, out + "\n--- next ---\n" + nxt.stdout + nxt.stderr
    assert "Powered on" in power(host, vmid), nxt.stdout
    assert shutdowns_since(host, mark) == ["vmsvc/power.on"], nxt.stdout
    assert "powered it off for a backup and is gone; it is off" in nxt.stdout, nxt.stdout


def test_vm_going_off_as_the_next_run_asks_it_to_shut_down_is_powered_on_by_it(host, tmp_path):
    """web goes off just before the next run's own shutdown request reaches the host, which refuses it
    (no VMware Tools run in a VM that is off). Without ENABLE_HARD_POWER_OFF that run took the refusal for
    a guest that will not go down: web not backed up, its marker removed, web left OFF for good. It is off,
    as the run wanted: backed up, and powered on after its backup."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, out = stopped_going_down(host, tmp_path, conf, "TERM")
    (tmp_path / "next").mkdir()
    next_second()
    rc, nxt = held(host, tmp_path / "next", "vim-cmd", "vmsvc/power.shutdown*", "before",
                   lambda: hotvcb_background(host, "backup", "-m", "web", "-g", conf),
                   lambda: vim(host, "vmsvc/power.off", vmid))
    assert rc == 0, out + "\n--- next ---\n" + nxt
    assert "Powered on" in power(host, vmid), nxt
    assert len(good(host, conf, "web")) == 1, nxt


def test_cleanup_powers_on_a_vm_the_next_run_took_over_once_that_run_is_killed_too(host, tmp_path):
    """The run that took web over (found off with the gone run's marker) is killed too, during web's copy:
    the marker is now its own, so `hotvcb cleanup` powers web on, as it would for the first run."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)
    vmid, out = stopped_going_down(host, tmp_path, conf, "TERM")
    vim(host, "vmsvc/power.off", vmid)
    (tmp_path / "next").mkdir()
    _, nxt = stopped(host, tmp_path / "next", "vmkfstools", "-i*", "before", ("backup", "-m", "web", "-g", conf))
    assert "Powered off" in power(host, vmid), nxt
    c = hotvcb(host, "cleanup", "-g", conf)
    assert c.returncode == 0, nxt + "\n--- cleanup ---\n" + c.stdout + c.stderr
    assert "Powered on" in power(host, vmid), c.stdout


def test_vm_taken_over_whose_backup_is_refused_before_it_begins_is_powered_on(host, tmp_path):
    """The next run takes web over (off, the gone run's marker) and then refuses its backup at the
    pre-flight (web has a snapshot of the user's, and this run's config does not allow that): web is
    powered on all the same, as the leftover check powered it on before runs took such a VM over."""
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    vmid, out = stopped_going_down(host, tmp_path, conf, "TERM")
    vim(host, "vmsvc/snapshot.create", vmid, "user snap")
    vim(host, "vmsvc/power.off", vmid)
    strict = write_conf(host, name="strict.conf", POWER_VM_DOWN_BEFORE_BACKUP=1)
    nxt = backup_once(host, strict, "web")
    assert nxt.returncode != 0 and "ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP" in nxt.stdout, nxt.stdout + nxt.stderr
    assert "Powered on" in power(host, vmid), nxt.stdout


def test_cold_snapshot_vm_going_off_during_the_next_run_is_powered_on_by_it(host, tmp_path):
    """COLD_SNAPSHOT shuts web down too: the same take-over when its guest finishes the gone run's shutdown
    during the next run."""
    conf = write_conf(host, COLD_SNAPSHOT=1)
    vmid, out = stopped_going_down(host, tmp_path, conf, "KILL")
    conf2 = write_conf(host, name="next.conf", COLD_SNAPSHOT=1, PRE_BACKUP_HOOK=off_now(vmid))
    nxt = backup_once(host, conf2, "web")
    assert nxt.returncode == 0, out + "\n--- next ---\n" + nxt.stdout + nxt.stderr
    assert "Powered on" in power(host, vmid), nxt.stdout
