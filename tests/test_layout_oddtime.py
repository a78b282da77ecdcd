"""A folder named like a backup but with a time no calendar has (month 13, 30 February, hour 25: a copy
named by hand) made list_backups raise ValueError, and with it list, status, verify, rotation after a
backup, cleanup, restore and verify --boot of a path: a traceback where admins look for their backups.
It is no backup: never counted, rotated or removed, and named where a user reads."""

import json
import shutil
import struct
import time
import types
from datetime import datetime

import pytest
from repotool import cli

from hotvcb.commands import verify_cmd
from hotvcb.errors import HotvcbError, UsageError
from hotvcb.jobs import backup_check, status_backups, status_report
from hotvcb.jobs.partials import remove_partials
from hotvcb.localshell import LocalShell
from hotvcb.runid import RunId
from hotvcb.settings import Settings
from hotvcb.store import health, layout, manifest, rotation
from fakelog import Log

ODD = ("web-2026-13-01_00-00-00", "web-2026-02-30_00-00-00.gz", "web-2026-01-01_25-00-00-partial",
       "web-2026-04-31_00-00-00-deleting", "web-2026-01-01_00-60-00")
GOOD = ("web-2026-01-01_00-00-00", "web-2026-01-02_00-00-00")


def ghettovcb_backup(folder):
    """What health.judge calls good with no manifest (unverifiable): STATUS.ok, the .vmx and a disk."""
    folder.mkdir(parents=True)
    (folder / "STATUS.ok").write_text("")
    (folder / "web.vmx").write_text('displayName = "web"\n')
    (folder / "web.vmdk").write_text('# Disk DescriptorFile\ncreateType="vmfs"\nRW 8 VMFS "web-flat.vmdk"\n')
    (folder / "web-flat.vmdk").write_bytes(bytes(8 * 512))


@pytest.fixture
def volume(tmp_path):
    """The VM `web`'s folder: two good backups, and each odd name, good by its content too."""
    for name in GOOD + ODD:
        if name.endswith(".gz"):
            (tmp_path / "web").mkdir(exist_ok=True)
            (tmp_path / "web" / name).write_bytes(b"")
        else:
            ghettovcb_backup(tmp_path / "web" / name)
    return tmp_path


def named_once(lines, volume):
    """Each odd folder named in exactly one of `lines`."""
    return all(sum(str(volume / "web" / name) + ":" in line for line in lines) == 1 for name in ODD)


def test_list_backups_leaves_an_impossible_time_out_and_says_so(volume):
    told = []
    found = layout.list_backups(LocalShell(), str(volume), "web", told.append)
    assert [b.name for b in found] == list(GOOD)
    assert len(told) == len(ODD) and named_once(told, volume), told
    assert layout.list_backups(LocalShell(), str(volume), "web") == found  # callers that say nothing


def test_rotation_and_cleanup_leave_it_and_the_run_log_names_it(volume):
    log = Log()
    removed = rotation.rotate(LocalShell(), str(volume), "web", 1, log)
    assert removed == [str(volume / "web" / GOOD[0])]
    assert named_once([m for level, m in log.records if level == "warning"], volume), log.lines
    remove_partials(LocalShell(), str(volume), "web", log, RunId.new())  # -partial and -deleting: a dead run's?
    assert all((volume / "web" / name).exists() for name in ODD)


def test_status_names_it_without_counting_it_or_raising_the_severity(volume):
    host = types.SimpleNamespace(shell=LocalShell(), host_name=lambda: "esx1", system_id=lambda: "")
    now = time.mktime(datetime(2026, 1, 2, 1, 0, 0).timetuple())
    check = status_backups._backups(host, Settings(vm_backup_volume=str(volume)), "web", "", status_report.Limits(),
                                    now)
    assert (check.severity, check.details["good_backups"]) == (status_report.OK, 2)
    assert named_once([check.message], volume), check.message


def test_verify_skips_it_by_name(volume):
    paths, skipped, _missing, _unpacked = verify_cmd.targets(LocalShell(), str(volume), None, True)
    assert paths == [str(volume / "web" / name) for name in GOOD]
    assert named_once(skipped, volume), skipped
    for name in GOOD:
        shutil.rmtree(str(volume / "web" / name))
    with pytest.raises(UsageError) as refused:  # "no backups of 'web'" would leave the admin wondering
        verify_cmd.targets(LocalShell(), str(volume), "web", False)
    assert named_once([str(refused.value)], volume), refused.value


def test_list_json_stays_one_document_and_stderr_names_it(volume):
    r = cli("list", "--volume", volume, "--json")
    assert r.returncode == 0, r.stderr
    assert [b["name"] for b in json.loads(r.stdout)["backups"]] == list(GOOD)
    assert named_once([l for l in r.stderr.splitlines() if l.startswith("hotvcb: warning: ")], volume), r.stderr


def test_a_path_named_so_is_refused_by_name_and_its_good_siblings_still_found(volume):
    """Read as a plain folder, STATUS.ok would make it good for restore and verify --boot."""
    odd = str(volume / "web" / ODD[0])
    with pytest.raises(HotvcbError, match="^%s: named like a backup, but 2026-13-01_00-00-00 is no date and time"
                       % odd):
        backup_check.require_good(LocalShell(), odd)
    assert layout.from_path(LocalShell(), str(volume / "web" / GOOD[0])).status == "ok"


def test_an_incremental_on_such_a_base_is_incomplete(volume):
    inc = volume / "web" / "web-2026-01-03_00-00-00"
    inc.mkdir()
    hint = ("../%s/vda.qcow2" % ODD[0]).encode()
    (inc / "vda.qcow2").write_bytes(b"QFI\xfb" + struct.pack(">IQI", 3, 64, len(hint)) + bytes(44) + hint)
    (inc / manifest.MANIFEST).write_text(json.dumps({
        "format": manifest.FORMAT, "result": "ok", "files": {"vda.qcow2": {}},
        "disks": [{"key": "vda", "ok": True, "files": ["vda.qcow2"]}]}))
    (inc / "STATUS.ok").write_text("")
    verdict = health.judge(LocalShell(), layout.from_path(LocalShell(), str(inc)))
    assert verdict.state == "incomplete" and str(volume / "web" / ODD[0]) + ":" in verdict.reason, verdict


def test_ghettovcbs_space_padded_hour_is_the_same_time_as_the_zero_padded_one(tmp_path):
    """ghettoVCB.sh's fallback name `date +%F_%k-%M-%S` pads the hour with a space: such a backup counts,
    in time order with hotvcb's `%H` names; a name with no hour digit at all is still no backup."""
    for name in ("web-2026-11-30_ 3-00-02", "web-2026-11-30_10-00-00", "web-2026-11-29_03-00-00"):
        ghettovcb_backup(tmp_path / "web" / name)
    (tmp_path / "web" / "web-2026-11-30_  3-00-02").mkdir()
    found = layout.list_backups(LocalShell(), str(tmp_path), "web")
    assert [(b.name, b.when) for b in found] == [
        ("web-2026-11-29_03-00-00", datetime(2026, 11, 29, 3, 0, 0)),
        ("web-2026-11-30_ 3-00-02", datetime(2026, 11, 30, 3, 0, 2)),
        ("web-2026-11-30_10-00-00", datetime(2026, 11, 30, 10, 0, 0))]
