"""Testers' notes (session 32, b): ghettoVCB's folders and list files, SSH mode's report, a dry run's log,
the rotation count's limit, what restore refuses, each pinned through the public command line."""

import os

import pytest

from simhost import VOLUME, hotvcb, needs_root, write_conf
from test_outsider_interop import ghettovcb_disk, ghettovcb_folder

OK = "Successfully completed backup"
SECOND = 'scsi0:1.deviceType = "scsi-hardDisk"\nscsi0:1.fileName = "web_1.vmdk"\nscsi0:1.present = "TRUE"\n'


def _volume(host):
    from pathlib import Path
    return Path(host.real(VOLUME))


# -- 1. a folder an rsync cut short: one refusal, no warning before it -------------------------------------

@needs_root
@pytest.mark.parametrize("dry", [[], ["-d", "1"]])
def test_restore_of_a_cut_short_folder_is_refused_before_anything_is_said(host, dry):
    """An rsync killed between a ghettoVCB backup's two disks left the newest folder with the .vmx and the
    first disk only; the older backup holds both. Restoring that folder by its path warned "disk scsi0:1
    ... is restored disconnected", then refused the folder as cut short: the admin read that the VM comes
    back without its data disk, then that it does not come back at all. One refusal, naming the cut, and
    nothing before it."""
    vol = _volume(host)
    whole = ghettovcb_folder(vol, "web", "2026-11-01_21-00-01", "STATUS.ok", OK, SECOND)
    ghettovcb_disk(whole, "web_1")
    cut = ghettovcb_folder(vol, "web", "2026-11-02_21-00-01", "STATUS.ok", OK, SECOND)
    r = hotvcb(host, "restore", *dry, "%s/web/%s" % (VOLUME, cut.name), "--datastore", "datastore1", "--name", "w2")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "cut short" in out, out
    assert "disconnected" not in out, out
