"""A host whose `vmware -v` names no ESXi release, through the CLI on esxisim.

The release decides one thing besides the log: whether vmkfstools gets `-a` (hosts before 6.5
need it for the copy's adapter type, later ones ignore it with a warning). An unknown release
gets it, and the run's log says so once; a backup is never refused for it.
"""

import pytest

from esxisim import proclog
from simhost import hotvcb, needs_root, sealed, wrap_tool, write_conf

pytestmark = needs_root


def clones(host):
    return [e["args"] for e in proclog.read(host) if e["event"] == "start" and e["tool"] == "vmkfstools"
            and "-i" in e["args"]]


def warnings(out):
    return [line for line in out.splitlines() if "warning:" in line]


@pytest.mark.parametrize("answer, said", [
    ('echo "VMware Workstation 17.0.0 build-20800274"; exit 0', "VMware Workstation 17.0.0 build-20800274"),
    ('echo "sh: /bin/vmware: not found" >&2; exit 127', "exit 127: sh: /bin/vmware: not found"),
    ("exit 0", "nothing"),
])
def test_an_unknown_release_is_warned_about_once_and_every_clone_gets_the_adapter_type(host, tmp_path, answer, said):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}, {"size": "4M"}], power="on")
    wrap_tool(host, "vmware", answer)
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    assert len(sealed(host, "alpha")) == 1, out
    assert [l for l in out.splitlines() if "HOST:" in l and "(unknown ESXi)" in l], out
    unknown = [l for l in warnings(out) if "ESXi release is unknown" in l]
    assert len(unknown) == 1 and repr(said) in unknown[0] and "-a lsilogic" in unknown[0], out
    assert len(clones(host)) == 2 and all("-a" in argv for argv in clones(host)), clones(host)


def test_chatter_around_the_release_line_is_no_unknown_release(host, tmp_path):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    wrap_tool(host, "vmware", 'echo "Last login: Wed Dec  2 10:00:00 2026 from 10.0.0.5"; echo')  # then the real one
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not warnings(out), out
    host_line = [l for l in out.splitlines() if "HOST:" in l]
    assert len(host_line) == 1 and "(VMware ESXi 7.0.3 build-" in host_line[0] and "Last login" not in out, out
    assert len(clones(host)) == 1 and "-a" not in clones(host)[0], clones(host)


def releases_asked(host):
    return len([e for e in proclog.read(host) if e["event"] == "start" and e["tool"] == "vmware"])


def host_line(out):
    return [l for l in out.splitlines() if "HOST:" in l]


def test_the_release_is_asked_once_per_boot_and_anew_after_the_reboot_of_an_upgrade(host, tmp_path):
    """hosts/esxi_release.py: `vmware -v` is kept on the host's ramdisk, which a reboot empties,
    and a release changes only at a reboot."""
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    for run in range(2):
        r = hotvcb(host, "backup", "-m", "alpha", "-g", conf, "-w", tmp_path / "work")
        out = r.stdout + r.stderr
        assert r.returncode == 0 and not warnings(out), out
        assert len(host_line(out)) == 1 and "(VMware ESXi 7.0.3 build-" in host_line(out)[0], out
        assert releases_asked(host) == 1, run  # the second run read it from /var/run
    host.reboot(version="8.0.2")
    host.power_on(vmid)
    r = hotvcb(host, "backup", "-m", "alpha", "-g", conf, "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not warnings(out), out
    assert len(host_line(out)) == 1 and "(VMware ESXi 8.0.2 build-" in host_line(out)[0], out
    assert releases_asked(host) == 2 and len(sealed(host, "alpha")) == 3


def test_an_unknown_release_or_a_kept_line_naming_none_is_asked_again(host, tmp_path):
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    kept = host.store.p("root", "run", "upper", "hotvcb.release")
    with open(kept, "w") as f:
        f.write("VMware ESXi 7.0.3\n")  # no build: names no release
    asked = tmp_path / "asked"
    wrap_tool(host, "vmware", 'echo >> %s; echo "VMware Workstation 17.0.0 build-20800274"; exit 0' % asked)
    conf = write_conf(host)
    for run in range(2):
        r = hotvcb(host, "backup", "-m", "alpha", "-g", conf, "-w", tmp_path / "work")
        out = r.stdout + r.stderr
        assert r.returncode == 0 and [l for l in warnings(out) if "ESXi release is unknown" in l], out
        assert asked.read_text().count("\n") == run + 1, out
        assert all("-a" in argv for argv in clones(host)), clones(host)
