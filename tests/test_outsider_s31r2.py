"""Outside tests, session 31 round 2: `--host USER@HOST[:PORT]` and `[IPv6]` forms, lists from named pipes.
Each xfail is one defect, asserting what the admin should have seen."""

import os
import re
import subprocess
import sys

import pytest

from cronsite import crontab_on_path
from simhost import REPO, needs_root, write_conf
from sshsite import site  # noqa: F401  (the fixture)


def _run(*args, env=None, timeout=60):
    r = subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO, env=env or dict(os.environ, PYTHONPATH=REPO))
    r.out = r.stdout + r.stderr
    return r


@pytest.mark.parametrize("value", ["@esx1", "esx1:", "root@esx1:abc", "root@[::1", "root@[]:22", "root@[::1]:"])
def test_a_host_value_that_is_no_user_host_port_is_refused_naming_it(tmp_path, value):
    """The admin's script builds `--host "$USER@$HOST:$PORT"` and one variable is empty or mistyped (`@esx1`,
    `esx1:`, `esx1:abc`, `[::1` without its `]`). hotvcb refuses `--host root@` ("names no host: give
    [USER@]HOST[:PORT]"), but these go to ssh as they are: ssh resolves "esx1:" or "esx1:abc" as a host name
    (the very confusion the `[:PORT]` form was added to end), and for `@esx1` the admin is shown a line of
    ssh's usage text ("[-w local_tun[:remote_tun]] destination ...") as the reason. The value must be refused
    before any connection, naming it and the form expected."""
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/datastore1/backups\n")
    r = _run("--host", value, "status", "-g", conf)
    assert r.returncode != 0 and "Traceback" not in r.out, r.out
    assert "cannot connect" not in r.out and "over SSH" not in r.out, r.out
    assert value in r.out and "[USER@]HOST[:PORT]" in r.out, r.out


@pytest.mark.parametrize("line", ["@esx1", "esx1:", "root@[::1"])
def test_a_hosts_file_line_that_is_no_host_is_named_as_a_bad_line(tmp_path, line):
    """The monitoring box's fleet.txt gets a line from a template with the user variable empty (`@esx1`) or a
    port left off after its colon (`esx1:`). `status --hosts fleet.txt` tries ssh with it: the report says
    'cannot connect to @esx1 over SSH: [-w local_tun[:remote_tun]] destination [command [argument ...]]' (a line
    of ssh's usage) or that "esx1:" cannot be resolved, as if the host were down. The line should be reported
    as one that names no host (the form expected), as `--host root@` is refused."""
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/datastore1/backups\n")
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(line + "\n")
    r = _run("status", "--hosts", fleet, "-g", conf)
    assert r.returncode != 0 and "Traceback" not in r.out, r.out
    assert "cannot connect" not in r.out and line in r.out and "[USER@]HOST[:PORT]" in r.out.upper(), r.out


@pytest.mark.parametrize("value", ["root@esx1:0", "root@esx1:99999"])
def test_a_port_out_of_range_in_host_is_refused_before_connecting(tmp_path, value):
    """`--host root@esx1:99999` (a typo for 9999): the run tries to connect and reports 'cannot connect to
    root@esx1 over SSH: Bad port' as if the host were down; a monitor's status check turns UNKNOWN as for an
    unreachable host. A port that cannot exist is a bad command line: refused before connecting, naming it."""
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/datastore1/backups\n")
    r = _run("--host", value, "status", "-g", conf)
    assert r.returncode != 0 and "Traceback" not in r.out, r.out
    assert "cannot connect" not in r.out, r.out
    assert value.rsplit(":", 1)[1] in r.out, r.out


@needs_root
@pytest.mark.parametrize("forms", [("{u}@{h}:{p}", "{u}@{h}", True), ("{u}@[{h}]:{p}", "{u}@{h}", True),
                                   ("{u}@{h}", "{u}@{h}:{p}", False)],
                         ids=["port-in-host", "brackets", "port-option-then-host"])
def test_schedule_installed_with_one_host_spelling_is_removed_with_the_other(site, tmp_path, forms):
    """operations.md: `root@esxi01:2222` is `--host root@esxi01 --port 2222`. The admin installs the nightly
    job with one spelling and later removes it with the other: the same job must be found (one line, then none)."""
    (tmp_path / "cron").mkdir()
    table, path = crontab_on_path(tmp_path / "cron")
    sshd = site.sshd
    env = dict(site.env(), PATH="%s:%s" % (path.split(":", 1)[0], site.env()["PATH"]))
    site.host.create_vm("web", "datastore1", [{"size": "1M"}])
    conf = write_conf(site.host)
    common = ["--identity", sshd.identity, "--known-hosts", sshd.known_hosts]

    def host_args(form, with_port_option):
        dest = form.format(u=sshd.user, h=sshd.host, p=sshd.port)
        return ["--host", dest] + (["--port", str(sshd.port)] if with_port_option else []) + common

    first, second, second_needs_port = forms
    install = host_args(first, first == "{u}@{h}") + ["schedule", "install", "--cron", "0 1 * * *", "--",
                                                        "-m", "web", "-g", conf]
    r = _run(*install, env=env, timeout=120)
    assert r.returncode == 0, r.out
    ours = [ln for ln in table.read_text().splitlines() if "# hotvcb:" in ln]
    assert len(ours) == 1, table.read_text()
    r = _run(*host_args(second, second_needs_port) + ["schedule", "remove"], env=env, timeout=120)
    assert r.returncode == 0, r.out
    assert not [ln for ln in table.read_text().splitlines() if "# hotvcb:" in ln], (r.out, table.read_text())


# -- restores of a suspended VM and of one whose ISO lives in its own folder, the original VM gone -------------

from simhost import backed_up, hotvcb, vim  # noqa: E402


def _destroy(host, vmid, folder):
    vim(host, "vmsvc/power.off", vmid)
    vim(host, "vmsvc/unregister", vmid)
    subprocess.run(["rm", "-rf", host.real(folder)], check=True)


@needs_root
def test_a_suspended_vm_restored_in_place_of_the_lost_original_starts(host, tmp_path):
    """`web` was suspended when the nightly backup ran; its datastore is later lost. The admin restores the
    backup to the original name and datastore and powers it on: it must start (from its disks, as after a
    power loss), and the restore must not leave the .vmx naming a state file its folder lacks."""
    import re
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    vim(host, "vmsvc/power.suspend", vmid)
    backup = backed_up(host, "web", tmp_path / "work")
    _destroy(host, vmid, "/vmfs/volumes/datastore1/web")
    r = hotvcb(host, "restore", backup, "--datastore", "datastore1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    with open(host.real("/vmfs/volumes/datastore1/web/web.vmx"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r'checkpoint\.vmState = "([^"]*)"', text)
    assert m is None or m.group(1) == "", text
    [new] = [k for k in host.state()["vms"] if host.display_name(k) == "web"]
    vim(host, "vmsvc/power.on", new)
    assert host.power_state(new) == "on"


@needs_root
def test_a_restore_of_a_vm_whose_iso_was_in_its_lost_folder_warns_naming_the_iso(host, tmp_path):
    """`web`'s CD-ROM names `tools.iso` in its own folder (docs/restore.md: such an ISO is pointed at by full
    path, or warned about). The datastore is lost with the folder; the admin restores `web` to its own name and
    datastore. The backup holds no ISO, so the restored VM's CD-ROM names a file that is not there: the restore
    must say so, naming the device and the ISO, so the admin knows to copy it back before the VM boots from it."""
    import re
    from test_known_s31room import _with_iso_in_its_folder
    vmid = _with_iso_in_its_folder(host, "web")
    backup = backed_up(host, "web", tmp_path / "work")
    _destroy(host, vmid, "/vmfs/volumes/datastore1/web")
    r = hotvcb(host, "restore", backup, "--datastore", "datastore1")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert re.search(r"warning: .*ide1:0.*tools\.iso", out), out


@needs_root
@pytest.mark.parametrize("device, name", [("sata0:0", "tools.iso"), ("ide1:0", "isos/tools.iso"),
                                          ("ide1:0", "VMware Tools.iso")], ids=["sata", "subfolder", "space"])
def test_a_copy_under_a_new_name_points_at_an_iso_from_the_original_folder(host, tmp_path, device, name):
    """docs/restore.md: a CD-ROM's ISO in the VM's own folder is pointed at by full path (or warned about) when
    the VM is restored under a new name elsewhere. The admin's VM has its CD-ROM on SATA (the vSphere client's
    default for new VMs), or its ISO in a subfolder, or a name with a space. The copy must name an ISO that
    exists, or the restore must warn naming it."""
    import re
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="off")
    vmx = host.real(host.vm(vmid)["vmx"])
    with open(vmx, "a", encoding="utf-8") as f:
        f.write('%s.present = "TRUE"\n%s.deviceType = "cdrom-image"\n%s.fileName = "%s"\n' % (device, device, device, name))
    iso = os.path.join(os.path.dirname(vmx), name)
    os.makedirs(os.path.dirname(iso), exist_ok=True)
    with open(iso, "wb") as f:
        f.write(b"CD001" * 100)
    backup = backed_up(host, "web", tmp_path / "work")
    r = hotvcb(host, "restore", backup, "--datastore", "ds5", "--name", "web-copy")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    with open(host.real("/vmfs/volumes/ds5/web-copy/web-copy.vmx"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r'%s\.fileName = "([^"]*)"' % re.escape(device), text)
    target = m.group(1) if m else ""
    where = target if target.startswith("/") else "/vmfs/volumes/ds5/web-copy/" + target
    assert os.path.exists(host.real(where)) or re.search(r"warning: .*%s" % re.escape(device), out), (text, out)


# -- a VM list from a named pipe in SSH mode (the list is a file on the Linux box) ----------------------------

@needs_root
@pytest.mark.parametrize("option", ["-f", "-e"])
def test_a_fifo_whose_writer_opens_late_is_waited_for_in_ssh_mode(site, tmp_path, option):
    """`mkfifo vms; feed-vms > vms & hotvcb --host root@esxi01 backup -f vms`: the list is read on the Linux
    box (operations.md), and a writer that opens it a moment late is waited for, as with --qemu."""
    import threading
    import time
    site.host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    site.host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    fifo = tmp_path / "vms"
    os.mkfifo(str(fifo))

    def feed():
        time.sleep(0.5)
        with open(str(fifo), "w") as pipe:
            pipe.write("web\n")
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    what = ["-a", "-e", fifo] if option == "-e" else ["-f", fifo]
    r, _ = site.run("backup", *what, "-g", write_conf(site.host), "-d", "dryrun")
    writer.join(5)
    assert "names no VM" not in r.out and "Traceback" not in r.out, r.out
    planned = set(re.findall(r"VMDK: /vmfs/volumes/datastore1/(\w+)/", r.out))
    assert planned == ({"db"} if option == "-e" else {"web"}), r.out
