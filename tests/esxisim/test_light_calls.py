"""A tool call is a fresh python3 -S, tens of thousands per test run: what it imports is most of
its CPU (json, re, hashlib, shutil, subprocess were two thirds of a vim-cmd call). A module
imported at the top again, where only some commands need it, fails here."""
import os
import subprocess
import sys

import pytest

from simtools import REPO

HEAVY = {"re", "json", "enum", "hashlib", "_hashlib", "shutil", "subprocess", "datetime", "urllib", "signal",
         "collections", "contextlib", "functools", "random"}  # snapshots and clones need struct, no more
WRAPPER = ("import sys; sys.path.insert(0, %r); from esxisim.tools import main\n"
           "try:\n    main()\nfinally:\n"
           "    sys.stderr.write('LOADED ' + ' '.join(sorted({m.split('.')[0] for m in sys.modules})) + '\\n')" % REPO)


def loaded(host, *args):
    r = subprocess.run([sys.executable, "-S", "-c", WRAPPER, args[0], host.root] + list(args[1:]),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return set(r.stderr.rsplit("LOADED ", 1)[1].split())


def loaded_modules(host, *args):
    """The esxisim modules a call loads (loaded() gives top-level names only)."""
    code = WRAPPER.replace("m.split('.')[0] for m in sys.modules", "m for m in sys.modules if m.startswith('esxisim')")
    r = subprocess.run([sys.executable, "-S", "-c", code, args[0], host.root] + list(args[1:]),
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


@pytest.mark.parametrize("args", [
    ("vim-cmd", "vmsvc/power.getstate", "{vm}"), ("vim-cmd", "hostsvc/datastore/listsummary"),
    ("vim-cmd", "hostsvc/datastore/info", "datastore1"),
])
def test_the_commonest_calls_load_neither_vmx_nor_the_snapshot_tree(host, vm, args):
    assert {"esxisim.vmx", "esxisim.snapshots"} & loaded_modules(host, *[a.format(vm=vm) for a in args]) == set()


def test_a_tool_is_a_python_script_with_no_shell_in_between(host):
    """`#!python -S`: a /bin/sh before each of thousands of calls cost ~1 ms of its ~15."""
    path = os.path.join(host.root, "root", "usr_bin", "upper", "vim-cmd")
    with open(path, encoding="utf-8") as f:
        assert f.readline() == "#!%s -S\n" % sys.executable
    r = subprocess.run([path, "vmsvc/getallvms"], capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0 and r.stdout.startswith("Vmid"), r.stdout + r.stderr
