"""A tool call is a fresh python3 -S, tens of thousands per test run: what it imports is most of
its CPU (json, re, hashlib, shutil, subprocess were two thirds of a vim-cmd call). A module
imported at the top again, where only some commands need it, fails here."""
import subprocess
import sys

import pytest

from simtools import REPO

HEAVY = {"re", "json", "enum", "hashlib", "_hashlib", "shutil", "subprocess", "datetime", "urllib", "signal",
         "collections", "contextlib", "functools"}  # snapshots and clones need random and struct, no more
WRAPPER = ("import sys; sys.path.insert(0, %r); from esxisim.tools import main\n"
           "try:\n    main()\nfinally:\n"
           "    sys.stderr.write('LOADED ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules})) + '\\n')" % REPO)


def loaded(host, *args):
    r = subprocess.run([sys.executable, "-S", "-c", WRAPPER, args[0], host.root] + list(args[1:]),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return set(r.stderr.rsplit("LOADED ", 1)[1].split())


@pytest.fixture
def vm(host):
    vmid = host.create_vm("light", "datastore1", [{"size": "1M"}], snapshots=["s1"])
    host.create_vm("running", "datastore1", [{"size": "1M"}], power="on")  # clones check its disks' locks
    return vmid


@pytest.mark.parametrize("args", [
    ("vim-cmd", "vmsvc/getallvms"), ("vim-cmd", "vmsvc/snapshot.get", "{vm}"),
    ("vim-cmd", "vmsvc/power.getstate", "{vm}"), ("vim-cmd", "hostsvc/datastore/listsummary"),
    ("esxcli", "system", "version", "get"), ("vmware", "-v"),
    ("vim-cmd", "vmsvc/snapshot.create", "{vm}", "s2"), ("vim-cmd", "vmsvc/snapshot.remove", "{vm}", "1"),
    ("vmkfstools", "-i", "/vmfs/volumes/datastore1/light/light.vmdk", "-d", "thin", "/vmfs/volumes/datastore1/c.vmdk"),
])
def test_a_tool_call_loads_none_of_the_heavy_modules(host, vm, args):
    assert loaded(host, *[a.format(vm=vm) for a in args]) & HEAVY == set()
