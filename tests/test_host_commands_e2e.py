"""Few host commands per VM (issue 8): each vim-cmd is a round trip to hostd on a real host,
and over SSH one more. Counted by a counting Shell wrapper around the CLI (tests/countshell.py),
on a simulated host: behaviour, not time."""

import collections
import json
import os
import subprocess
import sys

from simhost import REPO, needs_root, sealed, write_conf

TESTS = os.path.dirname(os.path.abspath(__file__))


def counted_backup(host, tmp_path, *args):
    out = str(tmp_path / "count.json")
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "env",
                        "PYTHONPATH=%s:%s" % (REPO, TESTS), "/bin/python", "-m", "countshell", out] + list(args),
                       capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    with open(out) as f:
        return r, json.load(f)


@needs_root
def test_a_backup_asks_hostd_little_per_vm(host, tmp_path):
    names = ["vm %d" % i for i in range(3)]
    for name in names:
        host.create_vm(name, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    for _ in range(2):  # the second run also rotates and judges the first run's backups
        r, count = counted_backup(host, tmp_path, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, r.stdout + r.stderr
    assert all(len(sealed(host, n)) == 2 for n in names)
    verbs = collections.Counter(" ".join(argv[:2]) for argv in count["commands"])
    n = len(names)
    # one look before (leftovers, pre-flight and the create's "before" list), one after the
    # create, one after the remove
    assert verbs["/bin/vim-cmd vmsvc/snapshot.get"] == 3 * n, verbs
    # the listing once per run for the names, the free space of the one target datastore per VM
    assert verbs["/bin/vim-cmd hostsvc/datastore/listsummary"] == 1, verbs
    assert verbs["/bin/vim-cmd hostsvc/datastore/info"] == n, verbs
    assert len(count["commands"]) <= 4 + 8 * n, verbs  # vmware -v, getallvms, listsummary, uname -n + 8 per VM
