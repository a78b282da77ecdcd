"""`hotvcb status` (read-only by promise) and dry runs (`cleanup -d dryrun`, a backup dry run's leftover check)
judge a dead run's `-partial` folder without writing into the backup volume: no `.hotvcb-clock.*` probe made
and removed in the VM's folder, so its listing and mtimes stay as they were (ownership.volume_age's dry_run)."""

import os

import pytest

from simhost import as_another_hosts_run, hotvcb, killed_while_compressing, needs_root, tree


@needs_root
@pytest.mark.parametrize("args", [("status",), ("cleanup", "-d", "dryrun"), ("backup", "-m", "web", "-d", "dryrun")])
def test_read_only_commands_leave_a_dead_runs_folder_untouched(host, args):
    conf, folder = killed_while_compressing(host)
    (partial,) = [os.path.join(folder, n) for n in os.listdir(folder) if n.endswith("-partial")]
    as_another_hosts_run(partial, 3600)  # silent for an hour: dead by any clock
    before = tree(folder)
    r = hotvcb(host, *args, "-g", conf)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert "partial" in out, out  # the dead run's folder was looked at and named
    after = tree(folder)
    assert before == after, (sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)), out)
