"""VM names at the length limits: a name whose backups' longest folder name (`<VM>-<time>-deleting`) would
pass 255 bytes is refused before anything is written, naming its length and the limit; a long name of
multi-byte letters that fits is backed up, on a simulator that takes it without a traceback."""

import os

import esxisim.vmx as vmx
from simhost import VOLUME, hotvcb, needs_root, ours, sealed, write_conf

pytestmark = needs_root


def vm_named(host, folder, name):
    vmid = host.create_vm(folder, "datastore1", [{"size": "1M"}], power="on")
    data = host.load_vmx(vmid)
    data["displayName"] = name
    vmx.save(host.vmx_real(vmid), data)
    return vmid


def test_a_name_too_long_for_its_partial_folder_is_refused_up_front(host):
    """227 bytes: the final folder `<VM>-<time>` (247) fits, `-partial` (255) too, `-deleting` (256) not."""
    conf = write_conf(host)
    long_id = vm_named(host, "long", "x" * 227)
    vm_named(host, "fits", "y" * 226)
    r = hotvcb(host, "-a", "-g", conf)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    (line,) = [l for l in out.splitlines() if "-- error:" in l]
    assert "227 bytes" in line and "255" in line and "rename the VM" in line, line
    assert not os.path.exists(host.real(VOLUME + "/" + "x" * 227)) and ours(host, long_id) == []
    assert len(sealed(host, "y" * 226)) == 1, out
    r = hotvcb(host, "status", "-g", conf)
    assert "227 bytes" in r.stdout, r.stdout


def test_a_long_name_of_umlauts_is_backed_up(host):
    """60 `ü` (120 bytes): past what the simulator's per-VM log file could be named after, within ESXi's
    80 characters and the folder's 255 bytes."""
    conf = write_conf(host)
    name = "ü" * 60
    vmid = vm_named(host, "uml", name)
    r = hotvcb(host, "-m", name, "-g", conf)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert len(sealed(host, name)) == 1 and ours(host, vmid) == []
