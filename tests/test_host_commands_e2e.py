"""Few host commands per VM (issue 8): each vim-cmd is a round trip to hostd on a real host,
and over SSH one more. Counted by a counting Shell wrapper around the CLI (tests/countshell.py),
on a simulated host: behaviour, not time. What is asked ahead, while the VM before is copied
(jobs/lookahead.py), is told by the order of esxisim's process log, and must not let a user's
snapshot taken meanwhile slip past the pre-flight."""

import collections
import json
import os
import subprocess
import sys

from esxisim import proclog, snapshots
from simhost import REPO, hotvcb_background, needs_root, sealed, snapshot_names, wait_for, write_conf

TESTS = os.path.dirname(os.path.abspath(__file__))


def counted_backup(host, tmp_path, *args):
    out = str(tmp_path / "count.json")
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "env",
                        "PYTHONPATH=%s:%s" % (REPO, TESTS), "/bin/python", "-m", "countshell", out] + list(args),
                       capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
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
            # first VM asked while the VM before was copied), one after the create, none after the
            # remove (the .vmsd says ours is gone); the power state once
            assert per_vm(count["commands"], vmid) == {"vmsvc/snapshot.get": 2, "vmsvc/power.getstate": 1,
                                                       "vmsvc/snapshot.create": 1, "vmsvc/snapshot.remove": 1}, run
        verbs = collections.Counter(" ".join(argv[:2]) for argv in count["commands"])
        # the listing once per run for the names; the target's free space at the run's check and at
        # the first VM's pre-flight, which the next VMs' pre-flights go by
        assert verbs["/bin/vim-cmd hostsvc/datastore/listsummary"] == 1, verbs
        assert verbs["/bin/vim-cmd hostsvc/datastore/info"] <= 2, verbs
        # vmware -v, getallvms, listsummary, uname -n, datastore/info x2; 5 per VM and its clone
        assert len(count["commands"]) <= 6 + 6 * len(names), verbs
    assert all(len(sealed(host, n)) == 2 for n in names)


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
