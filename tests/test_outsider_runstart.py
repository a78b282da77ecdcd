"""Outsider tests of a run's first host questions asked at once (jobs/ahead.py): a hostd that
hangs, fails or answers garbage for one of them, signals while they are out, and the host
changing between the inventory and the first VM's questions."""

import os
import shlex
import signal
import subprocess
import time

import pytest

from esxisim import proclog
from simhost import (backups, change_during_run, hotvcb, hotvcb_background, kill, lock_pid, needs_root, ours, sealed,
                     wait_for, wrap_tool, write_conf)

VM = "Wéb \"prod\" 'x' 1"
ACTING = ("snapshot.create", "snapshot.remove", "snapshot.removeall", "power.off", "power.on",
          "power.shutdown", "registervm", "unregister")


def _errors(out):
    return [l for l in out.splitlines() if "error:" in l]


def _hang_on(host, tmp_path, verb, arg2=None):
    """The first vim-cmd `verb` (with $2 == arg2 if given) writes its pid to a file and hangs."""
    pidfile = tmp_path / ("hung-" + verb.replace("/", "_"))
    cond = '[ ! -e %s ] && [ "$1" = %s ]' % (shlex.quote(str(pidfile)), shlex.quote(verb))
    if arg2 is not None:
        cond += ' && [ "$2" = %s ]' % shlex.quote(arg2)
    wrap_tool(host, "vim-cmd", 'if %s; then echo $$ > %s; exec sleep 300; fi' % (cond, shlex.quote(str(pidfile))))
    return pidfile


def _signal_while_hung(host, tmp_path, pidfile, sig, *args):
    run = hotvcb_background(host, *args)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.stat().st_size and lock_pid(host), timeout=60,
                 what="the question to hang")
        time.sleep(0.3)
        began = time.monotonic()
        run.send_signal(sig)
        try:
            out, _ = run.communicate(timeout=75)  # a snapshot's create cut by the signal: a minute's watch
        except subprocess.TimeoutExpired:
            kill(run.pid)
            out, _ = run.communicate(timeout=30)
            out += "\n[still running 75 s after the signal]"
        took = time.monotonic() - began
    finally:
        kill(run.pid)
        if pidfile.exists() and pidfile.read_text().strip():
            kill(int(pidfile.read_text()))
    return run.returncode, out, took


@needs_root
@pytest.mark.parametrize("question, sig", [("vmsvc/getallvms", signal.SIGINT),
                                           ("hostsvc/datastore/info", signal.SIGTERM)])
def test_a_signal_while_a_start_up_question_hangs_ends_the_run_promptly_and_cleanly(host, tmp_path, question, sig):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on")
    pidfile = _hang_on(host, tmp_path, question)
    code, out, took = _signal_while_hung(host, tmp_path, pidfile, sig,
                                         "backup", "-m", VM, "-g", write_conf(host), "-w", tmp_path / "work")
    assert code == 2 and "Traceback" not in out, (code, out)
    assert took < 15, took
    assert ours(host, vmid) == [] and not backups(host, VM) and lock_pid(host) is None, out


@needs_root
def test_sigterm_while_the_first_vms_snapshot_list_hangs_leaves_no_snapshot_no_folder(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on")
    pidfile = _hang_on(host, tmp_path, "vmsvc/snapshot.get", vmid)
    code, out, took = _signal_while_hung(host, tmp_path, pidfile, signal.SIGTERM,
                                         "backup", "-m", VM, "-g", write_conf(host), "-w", tmp_path / "work")
    assert code == 2 and "Traceback" not in out, (code, out)
    assert took < 15, took
    assert ours(host, vmid) == [] and not backups(host, VM) and lock_pid(host) is None, out
    assert host.power_state(vmid) == "on"


@needs_root
def test_sigterm_while_the_targets_free_space_hangs_in_parallel_mode(host, tmp_path):
    """Seen: one worker goes on to its snapshot, whose create is cut by the signal, then polls
    snapshot.get for ~60 s before the run ends, and leaves a STATUS.error folder (intermittent: which
    worker asked the hung question first). The other worker, whose own questions do not hang, may
    get as far as its copy before the signal: its folder is then an interrupted backup's record."""
    a = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    b = host.create_vm("beta", "ds5", [{"size": "4M"}], power="on")
    pidfile = _hang_on(host, tmp_path, "hostsvc/datastore/info")
    code, out, took = _signal_while_hung(host, tmp_path, pidfile, signal.SIGTERM, "backup", "-a", "--parallel", "2",
                                         "-g", write_conf(host), "-w", tmp_path / "work")
    problems = []
    if code != 2 or "Traceback" in out:
        problems.append("exit %s" % code)
    calls = [(e["event"], e["args"][0]) for e in proclog.read(host) if e["tool"] == "vim-cmd"]
    # a snapshot.create the signal cut may still finish in hostd: the run watches for it for up to a
    # minute (jobs/backup_end.py) rather than leave a snapshot behind; else it ends at once
    cut = calls.count(("start", "vmsvc/snapshot.create")) > calls.count(("end", "vmsvc/snapshot.create"))
    if took >= (70 if cut else 15):
        problems.append("ended %d s after SIGTERM" % took)
    if ours(host, a) or ours(host, b):
        problems.append("snapshot left: %s %s" % (ours(host, a), ours(host, b)))
    for name in ("alpha", "beta"):
        # a worker the signal met before its snapshot leaves no folder (as the serial loop leaves
        # none); one that had its snapshot and was copying leaves a failed backup's record, as any
        # interrupted backup does, and never one that looks complete
        snapped = any("Creating Snapshot" in l and l.endswith(" for %s" % name) for l in out.splitlines())
        # ...unless its questions did not hang and its small backup was done before the signal came
        done = any("Successfully completed backup for %s (" % name in l for l in out.splitlines())
        if (sealed(host, name) and not done) or (backups(host, name) and not snapped):
            problems.append("folder left for %s: %s" % (name, backups(host, name)))
    if lock_pid(host) is not None:
        problems.append("lock held")
    asked = [(e["event"], e["args"][:2]) for e in proclog.read(host) if e["tool"] == "vim-cmd"]
    assert not problems, "\n".join(problems + [out] + ["%s %s" % a for a in asked])


@needs_root
def test_garbage_power_state_of_the_first_vm_is_one_clear_error_and_nothing_left(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on")
    wrap_tool(host, "vim-cmd", 'if [ "$1" = vmsvc/power.getstate ]; then echo "Retrieved runtime info"; '
              'echo "\xc3\xbf\xc3\xbe banana"; exit 0; fi')
    r = hotvcb(host, "backup", "-m", VM, "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    assert len(_errors(out)) == 1 and "power" in _errors(out)[0].lower(), out
    assert ours(host, vmid) == [] and not sealed(host, VM) and lock_pid(host) is None, out


@needs_root
def test_two_questions_failing_at_once_give_the_earlier_checks_error_only(host, tmp_path):
    """The inventory (which VM) is checked before the target's room: with both failing, the
    inventory's error is the one, as asked one after the other, whichever thread fails first."""
    host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on")
    wrap_tool(host, "vim-cmd",
              'if [ "$1" = vmsvc/getallvms ]; then sleep 1; echo "(vim.fault.GenericVmConfigFault) {"; '
              'echo "   msg = \\"inventory busy\\""; echo "}"; exit 0; fi\n'
              'if [ "$1" = hostsvc/datastore/info ]; then echo "(vim.fault.GenericVmConfigFault) {"; '
              'echo "   msg = \\"info busy\\""; echo "}"; exit 0; fi')
    r = hotvcb(host, "backup", "-m", VM, "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    errs = _errors(out)
    assert len(errs) == 1 and "inventory busy" in errs[0], out
    assert lock_pid(host) is None and not backups(host, VM)


@needs_root
def test_dryrun_asks_nothing_that_acts(host, tmp_path):
    a = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("beta", "ds5", [{"size": "4M"}], power="off")
    r = hotvcb(host, "backup", "-a", "-d", "dryrun", "-g", write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1),
               "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    acted = [e["args"] for e in proclog.read(host) if e["event"] == "start"
             and (e["tool"] == "vmkfstools" or any(v in " ".join(e["args"][:1]) for v in ACTING))]
    assert acted == [], acted
    assert not backups(host, "alpha") and not backups(host, "beta") and ours(host, a) == []


@needs_root
def test_first_vm_unregistered_right_after_the_inventory_fails_in_one_line_and_leaves_nothing(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("getallvms.unregister_after", VM)
    r = hotvcb(host, "backup", "-m", VM, "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    errs = _errors(out)
    assert len(errs) == 1 and "no longer registered" in errs[0], out
    assert backups(host, VM) == [] and lock_pid(host) is None, out


@needs_root
def test_parallel_one_vm_unregistered_after_the_inventory_the_other_is_backed_up(host, tmp_path):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    host.create_vm("beta", "ds5", [{"size": "4M"}], power="on")
    host.set_fault("getallvms.unregister_after", "alpha")
    r = hotvcb(host, "backup", "-a", "--parallel", "2", "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 4 and "Traceback" not in out, out
    assert len(sealed(host, "beta")) == 1 and backups(host, "alpha") == [], out
    assert [l for l in _errors(out) if "alpha" in l and "no longer registered" in l], out
    assert lock_pid(host) is None


def _free_space_asked_then(host, tmp_path, meanwhile, *args):
    """Run hotvcb `args` with its target's free space held unanswered until `meanwhile()` has changed
    the host: (exit code, output)."""
    asked, go = tmp_path / "info-asked", tmp_path / "info-go"
    wrap_tool(host, "vim-cmd", 'if [ "$1" = hostsvc/datastore/info ]; then touch %s; n=0; '
              'while [ ! -e %s ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; fi'
              % (shlex.quote(str(asked)), shlex.quote(str(go))))

    def change():
        meanwhile()
        go.touch()
    return change_during_run(host, args, asked.exists, "the target's free space asked", change)


@needs_root
def test_backup_target_unmounted_between_the_listing_and_its_free_space(host, tmp_path):
    vmid = host.create_vm(VM, "datastore1", [{"size": "4M"}], power="on")
    code, out = _free_space_asked_then(host, tmp_path, lambda: host.remove_datastore("backup"),
                                       "backup", "-m", VM, "-g", write_conf(host), "-w", tmp_path / "work")
    assert code not in (0, 2) and "Traceback" not in out, (code, out)
    assert len(_errors(out)) == 1 and "backup" in _errors(out)[0], out
    assert ours(host, vmid) == [] and lock_pid(host) is None, out


@needs_root
def test_restore_whose_target_datastore_disappears_during_its_questions(host, tmp_path):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    backup = "/vmfs/volumes/backup/hotvcb/alpha/" + sealed(host, "alpha")[0]
    ds5 = host.ds_dir("ds5")
    code, out = _free_space_asked_then(host, tmp_path, lambda: host.remove_datastore("ds5"),
                                       "restore", backup, "--datastore", "ds5", "--name", "beta")
    assert code not in (0, 2) and "Traceback" not in out, (code, out)
    assert len(_errors(out)) == 1 and "ds5" in _errors(out)[0], out
    # the removed VMFS took its folder along (as on ESXi); one the restore made anew must hold nothing of it
    assert not os.path.isdir(ds5) or all(not e.startswith(("beta", ".hotvcb")) for e in os.listdir(ds5)), out
    assert "beta" not in [host.display_name(v) for v in host.vms()]
