"""An extent line's size that no disk can have (thousands of digits: Python 3.11+, and esxisim's 3.8.18, refuse
int() of 4,300 or more): each command that reads the descriptor fails with one clear line naming it."""

import os
import re

import pytest

from hotvcb import vmdk
from hotvcb.units import DIGITS_MAX
from simhost import VOLUME, backup_root, hotvcb, make_host, needs_root, sealed, write_conf

HUGE = "9" * 5000
DESCRIPTOR = '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n' \
             'RW %s VMFS "disk-flat.vmdk"\n'


def test_a_size_of_twenty_digits_is_read_and_one_digit_more_is_refused_naming_the_line():
    assert vmdk.parse(DESCRIPTOR % ("9" * DIGITS_MAX)).capacity == int("9" * DIGITS_MAX) * 512
    with pytest.raises(vmdk.BadSize, match=r"'RW 9{10}.* VMFS \"disk-flat.vmdk\"': a size of 21 digits"):
        vmdk.parse(DESCRIPTOR % ("9" * (DIGITS_MAX + 1)))


def _swell(path):
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(re.sub(r"^RW [0-9]+", "RW " + HUGE, text, flags=re.M))


def _one_clear_error(r):
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "internal error" not in out and "Traceback" not in out, out[-2000:]
    [line] = [line for line in out.splitlines() if "a size of 5000 digits" in line]
    assert "VMFS" in line and len(line) < 300, line


@needs_root
def test_backup_restore_and_status_name_the_line_of_a_descriptor_with_a_5000_digit_size(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
    [backup] = sealed(host, "web")
    _swell(os.path.join(backup_root(host, "web"), backup, "web.vmdk"))
    _one_clear_error(hotvcb(host, "restore", "%s/web/%s" % (VOLUME, backup), "--datastore", "datastore1",
                            "--name", "w2"))

    _swell(host.real("/vmfs/volumes/datastore1/web/web.vmdk"))
    _one_clear_error(hotvcb(host, "-m", "web", "-g", conf))
    r = hotvcb(host, "status", "-g", conf)
    # the VM's backups are judged too (its only backup's vmdk was swelled above): CRIT, the WARN naming the line
    assert r.returncode == 2 and "web: cannot read the VM: disk descriptor line" in r.stdout, r.stdout
    assert "CRIT backup        web: no good backup" in r.stdout, r.stdout
