"""Outside tester's attacks on `hotvcb cleanup` removing killed restores' scratch folders
(restore_scratch.py): forged and garbage `.owner` records, reused pids, other machines, symlinks,
races with running restores, SIGKILLed restores, awkward names. Nothing but our own scratch
folders may ever be deleted; a live restore never loses its folder; the report says what was done."""

import glob
import os
import subprocess
import sys

import pytest

from simhost import VOLUME, hotvcb, hotvcb_background, make_host, needs_root, wait_for, write_conf  # noqa: F401

pytestmark = needs_root

DS1 = "/vmfs/volumes/datastore1"


MACHINE = "esxi01"  # the simulated host's hostname, which hotvcb sees inside its namespace


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def record(host, name, pid, path, machine=None, root=DS1, raw=None):
    """Write `<root>/<name>.owner` as a restore would (or raw text)."""
    text = raw if raw is not None else "run=abcdef012345 machine=%s pid=%d started=1700000000\npath=%s\n" % (
        machine or MACHINE, pid, path)
    with open(host.real(root + "/" + name + ".owner"), "w", encoding="utf-8") as f:
        f.write(text)


def victim(host, path):
    """A folder with a file in it that must survive; its real path."""
    real = host.real(path)
    os.makedirs(real, exist_ok=True)
    with open(os.path.join(real, "precious.vmdk"), "w") as f:
        f.write("data")
    return real


def survives(real):
    return os.path.exists(os.path.join(real, "precious.vmdk"))


def no_traceback(r):
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_forged_record_never_deletes_outside_its_own_datastore(host):
    """A record's `path=` is trusted for everything but its last name: a record in datastore1's
    root naming a `.hotvcb-extract-*` folder on another datastore (the backup volume, ds5), via
    `..`, or behind a symlinked folder, must not make cleanup delete that folder."""
    conf = write_conf(host)
    pid = dead_pid()
    os.makedirs(host.real(VOLUME + "/web"), exist_ok=True)
    os.symlink(host.real(VOLUME + "/web"), host.real(DS1 + "/link"))
    cases = {
        ".hotvcb-extract-1-1-aaaaaa": VOLUME + "/web/.hotvcb-extract-1-1-aaaaaa",          # absolute elsewhere
        ".hotvcb-extract-2-1-bbbbbb": "/vmfs/volumes/ds5/.hotvcb-extract-2-1-bbbbbb",      # another datastore
        ".hotvcb-extract-3-1-cccccc": DS1 + "/../backup/hotvcb/.hotvcb-extract-3-1-cccccc",  # ../
        ".hotvcb-extract-4-1-dddddd": DS1 + "/link/.hotvcb-extract-4-1-dddddd",            # behind a symlink
    }
    reals = {}
    for name, path in cases.items():
        reals[name] = victim(host, path if "/link/" not in path else VOLUME + "/web/" + name)
        record(host, name, pid, path)
    r = hotvcb(host, "cleanup", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, r.stdout + r.stderr
    gone = [n for n, real in reals.items() if not survives(real)]
    assert gone == [], "cleanup deleted folders outside datastore1's root: %s\n%s" % (gone, r.stdout)
    assert "removed" in r.stdout and "left by a restore that died" not in r.stdout, r.stdout
