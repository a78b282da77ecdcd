"""SSH mode serves hosts that cannot run hotvcb themselves: ESXi 5.5, 6.5 and 6.7 have no Python 3.8.

esxisim simulates a 5.5 host without /bin/python, with 5.x texts (fault blocks with
dynamicType, snapshot.remove printing the remaining tree, vmkfstools that needs -a).
A hot backup over SSH must still hold the snapshot-time image and leave no snapshot.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sshd import needs_sshd
from sshsite import host_sshd

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [needs_sshd]
BK = "/vmfs/volumes/backup/bk"


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("version", ["5.5.0", "6.5.0", "6.7.0"])
def test_hot_backup_over_ssh_of_a_host_without_python(tmp_path, version):
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root for unshare -m")
    sys.path.insert(0, str(ROOT))
    from esxisim import Host, writer

    host = Host.create(str(tmp_path / "host"), version=version, crond=False)
    try:
        host.add_datastore("datastore1", 1 << 30, vmfs=5)
        host.add_datastore("backup", 1 << 30, vmfs=5)
        vmid = host.create_vm("old", "datastore1", [{"size": "8M"}], power="on", writer=True)
        r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "sh", "-c",
                            "PATH=/bin:/sbin; command -v python || echo none"], capture_output=True, text=True,
                           env=_env())
        assert r.stdout.strip() == "none"
        conf = tmp_path / "g.conf"
        conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=thin\nVM_BACKUP_ROTATION_COUNT=3\n" % BK,
                        encoding="utf-8")
        with host_sshd(host, tmp_path / "sshd") as sshd:
            r = subprocess.run([sys.executable, "-m", "hotvcb"] + sshd.cli_args()
                               + ["backup", "-m", "old", "-g", str(conf), "-w", str(tmp_path / "w")],
                               capture_output=True, text=True, timeout=300, env=_env(), cwd=str(ROOT))
        writer.stop(host, vmid)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "Final status: All VMs backed up OK!" in out
        log = host.writer_log("old")
        assert any(rec["event"] == "snapshot.create" for rec in log)
        assert any(rec["event"] == "snapshot.remove" for rec in log)
        assert [f for f in os.listdir(host.real("/vmfs/volumes/datastore1/old")) if "-00000" in f] == []
        [backup] = os.listdir(host.real(BK + "/old"))
        assert os.path.exists(host.real("%s/old/%s/STATUS.ok" % (BK, backup)))
    finally:
        host.stop()
