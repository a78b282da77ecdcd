"""The run's work folder under -w (commands/workdir.py): a dead run's is removed by the next run and by
cleanup; the run's own, another machine's, a WORKDIR_DEBUG-kept one (an earlier release's: no marker) and one
without a record are not."""
import os
import subprocess
import sys
from dataclasses import replace

from hotvcb.commands import workdir
from hotvcb.runid import RunId
from hotvcb.runlog import RunLog


def _folder(base, record, kept=False):
    path = os.path.join(str(base), workdir.PREFIX + record.run)
    os.makedirs(path)
    with open(os.path.join(path, workdir.RECORD), "w") as f:
        f.write(record.text() + "\n")
    open(os.path.join(path, workdir.KEPT if kept else workdir.REMOVABLE), "w").close()
    return path


def _dead():
    """A record of this machine whose process is gone."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return replace(RunId.new(), pid=p.pid)


def test_only_a_dead_run_of_this_machine_loses_its_work_folder(tmp_path):
    me = RunId.new().with_process_start()
    mine = _folder(tmp_path, me)
    dead = _folder(tmp_path, _dead())
    reused = _folder(tmp_path, replace(me, run="00aa00aa00aa"))  # our pid in an earlier run: long gone
    kept = _folder(tmp_path, _dead(), kept=True)
    other = _folder(tmp_path, replace(_dead(), machine="elsewhere", machine_id="0" * 32))
    unrecorded = os.path.join(str(tmp_path), "hotvcb-feedfeedfeed")
    os.makedirs(unrecorded)
    unmarked = _folder(tmp_path, _dead())  # an earlier release's WORKDIR_DEBUG=1 folder: no marker of either kind
    os.unlink(os.path.join(unmarked, workdir.REMOVABLE))
    log = RunLog("info", stream=open(os.devnull, "w"))
    assert workdir.sweep(str(tmp_path), me, log, dry=True) == sorted([dead, reused])
    assert os.path.isdir(dead)
    workdir.sweep(str(tmp_path), me, log)
    assert sorted(os.listdir(str(tmp_path))) == sorted(os.path.basename(p) for p in (mine, kept, other, unrecorded, unmarked))
