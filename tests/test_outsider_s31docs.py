"""Outside tester, session 31 (docs): a new admin reads README.md and docs/*.md and checks each concrete
promise (command examples, options, config keys and defaults, exit codes, layouts) against a simulated
ESXi host and the CLI. Each false promise an admin would act on is a strict xfail until fixed.
Tiny disks, one esxisim host per test."""

import os
import shutil
import subprocess

import pytest

from asuser import SYS_PYTHON, readable_code
from simhost import hotvcb, needs_root, sealed, write_conf


def _vms(host, *names):
    for name in names:
        host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")


@needs_root
def test_ghettovcb_cron_line_with_f_and_m_still_backs_up(host, tmp_path):
    """README.md:31 promises 'The ghettoVCB flags work as before' and migrating-from-ghettovcb.md:4 'Nothing
    needs converting'; the stricter points are listed (migrating-from-ghettovcb.md:50-54) and this is not one.
    ghettoVCB.sh's own usage says `-m     Name of VM to backup (overrides -f)`, and its getopts loop makes it so
    (`-m` points VM_FILE at its work list holding that one name). An admin whose wrapper passes the usual
    `-f vms_to_backup` and adds `-m web` for the VM that needs an extra run swaps ghettoVCB.sh for hotvcb: the
    run is `hotvcb backup: error: argument -m: not allowed with argument -f`, exit 1, and nothing is backed up.
    Expected: the run backs up `web` (as ghettoVCB did) and exits 0."""
    _vms(host, "web", "db")
    conf = write_conf(host)
    vms = tmp_path / "vms_to_backup"
    vms.write_text("db\n")
    r = hotvcb(host, "-f", str(vms), "-m", "web", "-g", conf)
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode == 0, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    assert sealed(host, "web"), r.stdout[-1500:]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not os.access(SYS_PYTHON, os.X_OK),
                    reason="needs root, runuser and a python3 other users may run")
@pytest.mark.parametrize("args", [["backup", "-m", "web"], ["cleanup"],
                                  ["schedule", "install", "--cron", "0 1 * * *", "--", "-m", "web"]],
                         ids=["backup", "cleanup", "schedule-install"])
def test_a_libvirt_backup_as_a_user_is_told_what_libvirt_needs_not_esxi_advice(tmp_path, args):
    """operations.md:76-78: 'a backup on this machine (ESXi, `--libvirt`, or `--qemu` with root's QMP folder)
    needs root for the run lock and the host's tools, and both `install` and the run say so in one line'.
    The KVM admin's cron job runs as their own user by mistake: `hotvcb --libvirt backup -m web`. The one line
    reads 'the run lock lives in /run/hotvcb/libvirt-system, and vim-cmd snapshots and vmkfstools disk copies
    need root; or run it from a Linux box in SSH mode (--host root@HOST)' - this machine has no vim-cmd or
    vmkfstools, and SSH mode backs up ESXi hosts only, so the advice sends them down a dead end
    (commands/common.py `_root_needed` words every non-QEMU host as ESXi; `--qemu` gets its own text). The
    same line answers `--libvirt cleanup` and `--libvirt schedule install` (to the user's crontab).
    Expected: exit 1 naming root and what libvirt's backup needs it for, without ESXi's tools or SSH mode."""
    with readable_code() as code:  # nobody may not reach the checkout (a clone under a 0700 folder)
        env = dict(os.environ, PYTHONPATH=code, HOME="/tmp")
        r = subprocess.run(["runuser", "-u", "nobody", "--", SYS_PYTHON, "-m", "hotvcb", "--libvirt"] + args,
                           capture_output=True, text=True, timeout=60, env=env, cwd="/tmp")
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert r.returncode == 1 and "must run as root" in out, (r.returncode, out[-1500:])
    assert "vim-cmd" not in out and "vmkfstools" not in out and "--host root@HOST" not in out, out[-1500:]
