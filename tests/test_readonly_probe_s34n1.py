"""`hotvcb status` (read-only by promise) and dry runs (`cleanup -d dryrun`, a backup dry run's leftover check)
judge a dead run's `-partial` folder without writing into the backup volume: no `.hotvcb-clock.*` probe made
and removed in the VM's folder, so its listing and mtimes stay as they were (ownership.volume_age's dry_run)."""

import os
import re
import time

import pytest

from simhost import hotvcb, killed_while_compressing, needs_root, tree


def _another_hosts_silent_run(partial):
    """The -partial made another machine's run, working on another host sharing the volume, silent for an
    hour: judged by its heartbeat, by the volume's age (where a real run's probe would go)."""
    owner = os.path.join(partial, ".hotvcb-owner")
    with open(owner) as f:
        text = f.read()
    text = re.sub(r" mid=\S+", "", re.sub(r"host=\S+", "host=otherhost", re.sub(r"machine=\S+", "machine=otherbox", text)))
    with open(owner, "w") as f:
        f.write(text)
    old = time.time() - 3600
    for path in (owner, partial):
        os.utime(path, (old, old))


@needs_root
@pytest.mark.parametrize("args", [("status",), ("cleanup", "-d", "dryrun"), ("backup", "-m", "web", "-d", "dryrun")])
def test_read_only_commands_leave_a_dead_runs_folder_untouched(host, args):
    conf, folder = killed_while_compressing(host)
    (partial,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith("-partial")]
    _another_hosts_silent_run(partial)
    before = tree(folder)
    r = hotvcb(host, *args, "-g", conf)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert "partial" in out, out  # the dead run's folder was looked at and named
    after = tree(folder)
    assert before == after, (sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)), out)
