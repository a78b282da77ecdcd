"""Outside tester: an ESXi admin moving from ghettoVCB (their files, their flags, their habits).

Each test is a defect found from the outside, marked xfail(strict) until it is fixed. Cheap on
purpose: in-process CLI calls on files in tmp_path where the defect shows before any host is
needed, one esxisim host with one small VM where it needs one.
"""

import os

import pytest

from hotvcb import cli
from simhost import backups, hotvcb, needs_root, snapshot_names, wrap_tool, write_conf


def clean_error(text: str) -> bool:
    """One line naming the problem: hotvcb's own `error:`, not the catch-all for its bugs."""
    return "hotvcb: error:" in text and "internal error" not in text and "Traceback" not in text


# -- -l FILE: the log file ----------------------------------------------------------------------------
@pytest.mark.xfail(strict=True, reason="-l naming a folder is an 'internal error: IsADirectoryError' "
                   "(runlog.RunLog opens the file unguarded), not an error naming the log file")
def test_log_file_that_is_a_folder_is_a_clean_error(tmp_path, capsys):
    """`-l /vmfs/volumes/ds/logs` (the folder ghettoVCB users keep their logs in, meant as
    `-l /vmfs/volumes/ds/logs/ghettoVCB.log`) must be refused by name before anything starts."""
    conf = tmp_path / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\n")
    code = cli.main(["-m", "web", "-g", str(conf), "-l", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert clean_error(err) and str(tmp_path) in err, err


@needs_root
@pytest.mark.xfail(strict=True, reason="a log file system that fills mid-backup (ghettoVCB users log to the "
                   "host's small /tmp ramdisk) aborts the run from RunLog._write's unguarded write: "
                   "'internal error: OSError', exit 1, our snapshot left on the running VM and a -partial folder")
def test_full_log_file_system_mid_backup_leaves_no_snapshot(host, tmpfs):
    """The log is a copy for the admin; losing it must not cost the VM its snapshot removal. The file
    system is filled (through the log file itself) the moment hotvcb asks for the snapshot."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    log = os.path.join(str(tmpfs("logfs", "64k")), "hotvcb.log")
    wrap_tool(host, "vim-cmd", 'case "$*" in *snapshot.create*) cat /dev/zero >>"%s" 2>/dev/null;; esac' % log)
    r = hotvcb(host, "-m", "web", "-g", write_conf(host), "-l", log)
    out = r.stdout + r.stderr
    assert snapshot_names(host, "1") == [], out
    assert not [b for b in backups(host, "web") if b.endswith("-partial")], out
    assert "internal error" not in out and "Traceback" not in out, out
