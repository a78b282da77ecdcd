"""Few host commands per VM (issue 8): each vim-cmd is a round trip to hostd on a real host,
and over SSH one more. Counted by a counting Shell wrapper around the CLI (tests/countshell.py),
on a simulated host: behaviour, not time. What is asked ahead, while the VM before is copied
(jobs/lookahead.py), is told by the order of esxisim's process log, and must not let a user's
snapshot taken meanwhile slip past the pre-flight. That a run's and a restore's first questions
are asked at once (jobs/ahead.py, background.Ahead) is told by a hostd that answers one of them
only once others have been answered: asked one after the other, they never are."""

import collections
import json
import os
import shlex
import signal
import subprocess
import threading
import time

import pytest

from esxisim import proclog, snapshots
from simhost import (backups, host_python, hotvcb, hotvcb_background, lock_pid, needs_root, ours, sealed, sigterm_when,
                     snapshot_names, wait_for, wrap_tool, write_conf)


# a powered-on VM's backup: its snapshot list and power state, its snapshot made and removed
ONE_VM = {"vmsvc/snapshot.get": 1, "vmsvc/power.getstate": 1, "vmsvc/snapshot.create": 1,
          "vmsvc/snapshot.remove": 1}


def counted_backup(host, tmp_path, *args):
    out = str(tmp_path / "count.json")
    r = host_python(host, "-m", "countshell", out, *args)
    with open(out) as f:
        return r, json.load(f)


def per_vm(commands, vmid):
    """vim-cmd verbs run on one VM, counted."""
    return collections.Counter(argv[1] for argv in commands
                               if argv[0] == "/bin/vim-cmd" and argv[1].startswith("vmsvc/") and argv[2:3] == [vmid])


@needs_root
def test_a_backup_asks_hostd_little_per_vm(host, tmp_path):
    names = ["vm %d" % i for i in range(3)]
    vmids = [host.create_vm(name, "datastore1", [{"size": "4M"}], power="on") for name in names]
    conf = write_conf(host)
    for run in range(2):  # the second run also rotates and judges the first run's backups
        r, count = counted_backup(host, tmp_path, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, r.stdout + r.stderr
        for vmid in vmids:
            # one look before (leftovers, pre-flight, the create's "before" list; for all but the
            # first VM asked while the VM before was copied), none after the create (the .vmsd
            # names ours and its id) nor after the remove (the .vmsd says ours is gone); the power
            # state once
            assert per_vm(count["commands"], vmid) == ONE_VM, run
        verbs = collections.Counter(" ".join(argv[:2]) for argv in count["commands"])
        # the listing once per run for the names; the target's free space at the run's check and at
        # the first VM's pre-flight, which the next VMs' pre-flights go by
        assert verbs["/bin/vim-cmd hostsvc/datastore/listsummary"] == 1, verbs
        assert verbs["/bin/vim-cmd hostsvc/datastore/info"] <= 2, verbs
        # vmware -v, getallvms, listsummary, uname -n, datastore/info x2; 4 per VM and its clone
        assert len(count["commands"]) <= 6 + 5 * len(names), verbs
    assert all(len(sealed(host, n)) == 2 for n in names)


@needs_root
def test_a_snapshot_the_vmsd_does_not_name_yet_is_found_by_asking_hostd(host, tmp_path):
    """snapshot.create returns before hostd has the snapshot (esxisim's snapshot.create.delay):
    the .vmsd does not name it yet, and the run asks hostd until it lists it, and removes it."""
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("snapshot.create.delay", 2)
    r, count = counted_backup(host, tmp_path, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    asked = per_vm(count["commands"], vmid)
    assert asked["vmsvc/snapshot.get"] >= 2 and asked["vmsvc/snapshot.create"] == 1, asked  # asked after the create
    assert len(sealed(host, "alpha")) == 1 and ours(host, vmid) == []


@needs_root
def test_on_a_release_before_esxi_55_the_new_snapshots_id_is_asked_of_hostd(host, tmp_path):
    """Only from ESXi 5.5 on are the .vmsd's uids known to be snapshot.get's Ids (hosts/esxi_snapshots.py
    VMSD_UIDS_FROM): a host that says it is 5.1 is asked after the create."""
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    wrap_tool(host, "vmware", 'echo "VMware ESXi 5.1.0 build-1065491"; exit 0')
    r, count = counted_backup(host, tmp_path, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert per_vm(count["commands"], vmid) == dict(ONE_VM, **{"vmsvc/snapshot.get": 2})
    assert len(sealed(host, "alpha")) == 1 and ours(host, vmid) == []


@needs_root
def test_the_next_vm_is_asked_about_during_a_copy_and_a_snapshot_taken_since_is_still_refused(host, tmp_path):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    second = host.create_vm("beta", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.delay", 4)
    host.set_fault("clone.match", "alpha")
    conf = write_conf(host)
    run = hotvcb_background(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")

    def asked_ahead():
        return any(e["event"] == "end" and e["args"][:2] == ["vmsvc/snapshot.get", second]
                   for e in proclog.read(host))

    wait_for(asked_ahead, timeout=120, what="beta's snapshots asked for during alpha's copy")
    snapshots.create(host, second, "user's own", "", memory=False, quiesce=False)  # alpha still copies
    out, _ = run.communicate(timeout=180)
    assert run.returncode == 4, out  # some VMs failed
    log = proclog.read(host)
    starts = [(e["tool"], e["args"][:2]) for e in log if e["event"] == "start"]
    ends = [(e["tool"], e["args"][:2]) for e in log if e["event"] == "end"]
    clone_end = [i for i, e in enumerate(log) if e["event"] == "end" and e["tool"] == "vmkfstools"][0]
    asked = [i for i, e in enumerate(log) if e["event"] == "start" and e["args"][:2] in (
        ["vmsvc/snapshot.get", second], ["vmsvc/power.getstate", second])]
    assert len(asked) == 2 and max(asked) < clone_end, (starts, ends)  # both while alpha was copied
    assert len(sealed(host, "alpha")) == 1
    assert "beta has delta files" in out and not sealed(host, "beta"), out
    assert snapshot_names(host, second) == ["user's own"]  # refused before any change


def answers_only_after(host, tmp_path, waits):
    """hostd answers `verb` (a key of `waits`) only once calls named by its patterns (text of their
    "end" records in the host's process log, from now on) have ended, or after 30 s; whether they
    ended while it was asked ("ok") or not ("late") goes to the returned file, a line per call."""
    seen, log = tmp_path / "asked-meanwhile", host.store.p("state", "processes.jsonl")
    since = len(proclog.read(host)) + 1
    out = shlex.quote(str(seen))
    cases = "".join('  %s) if ended %s; then echo "$1 ok" >> %s; else echo "$1 late" >> %s; fi ;;\n'
                    % (shlex.quote(verb), " ".join(shlex.quote(p) for p in patterns), out, out)
                    for verb, patterns in waits.items())
    wrap_tool(host, "vim-cmd", 'ended() {\n  n=0\n  while [ $n -lt 300 ]; do\n    ok=1\n'
              '    for p in "$@"; do tail -n +%d %s | grep \'"event": "end"\' | grep -qF "$p" || ok=0; done\n'
              '    [ $ok = 1 ] && return 0\n    sleep 0.1; n=$((n+1))\n  done\n  return 1\n}\n'
              'case "$1" in\n%sesac' % (since, shlex.quote(log), cases))
    return seen


def hostd_fails(host, verb):
    wrap_tool(host, "vim-cmd", 'if [ "$1" = %s ]; then echo "(vim.fault.GenericVmConfigFault) {"; '
              'echo "   msg = \\"hostd is busy\\""; echo "}"; exit 0; fi' % shlex.quote(verb))


@needs_root
def test_a_runs_first_questions_are_asked_at_once_each_once(host, tmp_path):
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    seen = answers_only_after(host, tmp_path, {
        # the inventory and the version beside the datastore listing
        "hostsvc/datastore/listsummary": ['"tool": "vmware"', '"vmsvc/getallvms"']})
    r, count = counted_backup(host, tmp_path, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(seen.read_text().splitlines()) == {"hostsvc/datastore/listsummary ok"}
    verbs = collections.Counter(" ".join(argv[:2]) for argv in count["commands"])
    assert verbs["/bin/vmware -v"] == verbs["/bin/vim-cmd vmsvc/getallvms"] == 1, verbs
    assert verbs["/bin/vim-cmd hostsvc/datastore/listsummary"] == verbs["uname -n"] == 1, verbs
    assert per_vm(count["commands"], vmid) == ONE_VM
    assert len(sealed(host, "alpha")) == 1


@needs_root
def test_the_first_vms_questions_are_asked_beside_the_runs_own_and_each_once(host, tmp_path):
    """The first VM's snapshot list and power state go out as soon as the VMs are known, while the
    target's free space (a question of the run's start) is still out: hostd answers that only once
    both ended, which, asked one after the other (the power state after the pre-flight that
    reads the free space), they never are. Nothing is asked twice for it."""
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    seen = answers_only_after(host, tmp_path, {
        "hostsvc/datastore/info": ['"vmsvc/power.getstate", "%s"' % vmid, '"vmsvc/snapshot.get", "%s"' % vmid]})
    r, count = counted_backup(host, tmp_path, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(seen.read_text().splitlines()) == {"hostsvc/datastore/info ok"}
    assert per_vm(count["commands"], vmid) == ONE_VM
    assert len(sealed(host, "alpha")) == 1


@needs_root
def test_a_question_of_the_runs_start_that_fails_fails_the_run_with_its_own_error_and_nothing_done(host, tmp_path):
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    hostd_fails(host, "hostsvc/datastore/listsummary")  # read by the inventory and the free space alike
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "hostsvc/datastore/listsummary" in errors[0] and "hostd is busy" in errors[0], out
    assert ours(host, vmid) == [] and not backups(host, "alpha") and lock_pid(host) is None, out


@needs_root
def test_sigterm_while_a_question_of_the_runs_start_hangs_ends_the_run_promptly_and_cleanly(host, tmp_path):
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    hung = tmp_path / "hung"
    # the version: asked ahead, and waited for by the log's first line
    wrap_tool(host, "vmware", 'echo $$ > %s; exec sleep 300' % shlex.quote(str(hung)))
    run = hotvcb_background(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    out, took = sigterm_when(run, lambda: hung.exists() and hung.stat().st_size and lock_pid(host),
                             "the version to hang", str(hung))
    assert run.returncode == 2 and "Traceback" not in out, (run.returncode, out)
    assert took < 15, "a hung question of the run's start held its end %d s" % took
    assert ours(host, vmid) == [] and not backups(host, "alpha") and lock_pid(host) is None, out


def _a_backup_to_restore(host, tmp_path):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    return "/vmfs/volumes/backup/hotvcb/alpha/" + sealed(host, "alpha")[0]


@needs_root
def test_a_restores_questions_are_asked_at_once_each_once(host, tmp_path):
    backup = _a_backup_to_restore(host, tmp_path)
    host.reboot()  # the backup's run kept the release on the ramdisk (hosts/esxi_release.py): asked again
    seen = answers_only_after(host, tmp_path, {
        "hostsvc/datastore/listsummary": ['"tool": "vmware"', '"vmsvc/getallvms"']})
    r, count = counted_backup(host, tmp_path, "restore", backup, "--datastore", "datastore1", "--name", "beta")
    assert r.returncode == 0, r.stdout + r.stderr
    assert seen.read_text().splitlines() == ["hostsvc/datastore/listsummary ok"]
    verbs = collections.Counter(" ".join(argv[:2]) for argv in count["commands"])
    assert verbs == {"/bin/vim-cmd hostsvc/datastore/listsummary": 1, "/bin/vim-cmd hostsvc/datastore/info": 1,
                     "/bin/vim-cmd vmsvc/getallvms": 1, "/bin/vmware -v": 1,
                     "/bin/vim-cmd solo/registervm": 1,
                     "uname -n": 1}, verbs  # a thin restore copies its disk itself; its log's HOST is the host's name


@needs_root
def test_a_restores_question_that_fails_fails_it_with_its_own_error_and_nothing_left(host, tmp_path):
    backup = _a_backup_to_restore(host, tmp_path)
    hostd_fails(host, "vmsvc/getallvms")  # asked ahead for the name check, which comes after the target's
    r = hotvcb(host, "restore", backup, "--datastore", "datastore1", "--name", "beta")
    out = r.stdout + r.stderr
    assert r.returncode == 6 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and "vmsvc/getallvms" in errors[0] and "hostd is busy" in errors[0], out
    assert sorted(os.listdir(host.real("/vmfs/volumes/datastore1"))) == ["alpha"], out  # no folder, no scratch


@needs_root
def test_a_restore_failing_its_pre_checks_is_not_held_by_a_hung_question_and_leaves_it_not_running(host, tmp_path):
    """The host's version is asked ahead for the clone's flags; a pre-check failing before the clone
    (the target folder exists) needs no answer, so a hung `vmware -v` (60 s timeout) must neither hold
    the report nor outlive the run (the question's process is in a session of its own)."""
    backup = _a_backup_to_restore(host, tmp_path)
    host.reboot()  # the backup's run kept the release on the ramdisk (hosts/esxi_release.py): asked again
    hung = tmp_path / "hung"
    wrap_tool(host, "vmware", 'if [ "$1" = -v ]; then echo $$ >> %s; exec sleep 300; fi' % shlex.quote(str(hung)))
    p = hotvcb_background(host, "restore", backup, "--datastore", "datastore1", "--name", "alpha")
    try:
        out = p.communicate(timeout=45)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        out = "HELD: still running after 45 s\n" + p.communicate(timeout=30)[0]
    finally:
        pids = [int(pid) for pid in hung.read_text().split()] if hung.exists() else []
        running = [pid for pid in pids if _running(pid)]
        for pid in running:
            os.kill(pid, signal.SIGKILL)
    assert pids, out  # it was asked, and hung
    assert p.returncode == 6 and "already exists" in out and "Traceback" not in out, (p.returncode, out)
    assert running == [], out


def test_dropped_questions_are_ended_even_uninterruptible_or_waiting_behind_a_hung_one(tmp_path):
    """Two questions for one kept answer (a repository restore's early `vmware -v` and its folder
    restore's own): the first hangs in a command no signal may stop, the second waits behind it.
    Dropping the second must not wait for the first (30 s: background.CANCEL_WAIT), and dropping
    the first ends its command, though a signal would not."""
    from hotvcb.background import Ahead, Kept
    from hotvcb.localshell import LocalShell
    pid_file = tmp_path / "pid"
    kept, shell = Kept(), LocalShell()

    def ask():
        return kept.get(lambda: shell.run(["sh", "-c", 'echo $$ > "$0"; exec sleep 300', str(pid_file)],
                                          interruptible=False))

    first = Ahead(ask, "test")
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 30)
    second = Ahead(ask, "test")
    pid = int(pid_file.read_text())
    try:
        started = time.monotonic()
        second.drop()
        assert time.monotonic() - started < 15
        first.drop()
        assert not _running(pid)
    finally:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _running(pid):
    """Is `pid` a live process (not gone, nor a zombie its parent has yet to reap)?"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_kept_answer_two_threads_ask_at_once_is_asked_once_and_its_failure_shared():
    """The driver's kept answers (here the datastore listing) are asked by one thread at a time; a
    thread that arrives meanwhile gets that answer or that error: a hung hostd costs one timeout."""
    from hotvcb.errors import CommandFailed
    from hotvcb.hosts.esxi import EsxiHost
    from hotvcb.shell import Completed

    asked, answering, second_there = [], threading.Event(), threading.Event()

    class Hostd:
        description = "a hostd whose listing fails once it is let go"
        remote = False

        def realpath(self, path):
            if threading.current_thread().name == "second":
                second_there.set()
            return path

        def run(self, argv, **_kw):
            asked.append(argv[1])
            answering.wait(30)
            return Completed(argv, 0, '(vim.fault.GenericVmConfigFault) {\n   msg = "hostd is busy"\n}\n')

    host = EsxiHost(Hostd())
    errors = []

    def free_space():
        try:
            host.free_space("/vmfs/volumes/backup/hotvcb")
        except CommandFailed as err:
            errors.append(str(err))

    threads = [threading.Thread(target=free_space, name=name) for name in ("first", "second")]
    threads[0].start()
    wait_for(lambda: asked, what="the listing to be asked")
    threads[1].start()
    wait_for(second_there.is_set, what="the second thread to ask")
    time.sleep(0.5)  # on its way to the listing being asked
    answering.set()
    for t in threads:
        t.join(30)
    assert asked == ["hostsvc/datastore/listsummary"] and len(errors) == 2, (asked, errors)
    assert all("hostd is busy" in e for e in errors), errors
    with pytest.raises(CommandFailed):  # a later caller asks again
        host.free_space("/vmfs/volumes/backup/hotvcb")
    assert asked == ["hostsvc/datastore/listsummary"] * 2
