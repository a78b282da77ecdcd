"""Outside tests, session 29 (round 2): the command line as admins and their scripts and monitors call it,
after the day's changes (options before the command, empty values, status of nothing, verify -c)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from localcli import SRC, json_of, local, qemu, said  # noqa: F401  (qemu: the fixture)
from simhost import VOLUME, backups, db_backed_up_elsewhere, hotvcb, needs_root, on_host, write_conf


@pytest.mark.parametrize("before", [["-g", "CONF"], ["-d", "debug"], ["--json"]])
def test_a_ghettovcb_flag_before_status_still_gives_the_monitor_its_exit_code_and_json(qemu, before):
    """An admin used to ghettoVCB puts `-g FILE` first out of habit and wrote the Nagios command as
    `hotvcb --qemu /run/qmp -g /etc/hotvcb.conf status --json`. hotvcb took `-g` for a ghettoVCB-style backup
    flag, turned the line into `backup -g F status --json` and failed on "argument --json-report: expected
    one argument" (a flag the admin never typed): exit 1, which the monitor shows as WARN, and no JSON.
    Today's fix made a stray option before `status` UNKNOWN with its JSON; a backup's flag before any other
    command deserves the same (or simply to be read as that command's own option)."""
    before = [str(qemu[1]) if w == "CONF" else w for w in before]
    r = local("--qemu", qemu[0], *before, "status", "-g", qemu[1], "--json", cwd=qemu[0].parent)
    assert r.returncode in (2, 3), said(r)
    assert json_of(r)["status"] in ("CRIT", "UNKNOWN"), r.stdout
    assert "--json-report" not in said(r), said(r)


def test_libvirt_given_an_empty_uri_is_not_taken_for_the_command(qemu):
    """A monitor's command is `hotvcb --libvirt "$LIBVIRT_URI" status -g F --json`, and on one KVM host the
    variable is not set. Every option given an empty value is now refused naming it (or, for --libvirt,
    could mean the default URI), but here the empty word became the COMMAND: "argument COMMAND: invalid
    choice: ''", exit 1 (WARN to Nagios) and no UNKNOWN JSON. The admin should read what is wrong
    (--libvirt's value), and the monitor get status's exit code and JSON."""
    r = local("--libvirt", "", "status", "-g", qemu[1], "--json")
    assert "invalid choice: ''" not in r.stderr, said(r)
    assert r.returncode in (2, 3) and json_of(r)["status"] in ("CRIT", "UNKNOWN"), said(r)


@needs_root
def test_verify_all_names_a_per_vm_volume_that_is_not_there(host, tmp_path):
    """`db`'s per-VM file sends its backups to /vmfs/volumes/nas2/db (a NAS datastore, gone after an APD).
    `hotvcb verify --all -g F -c DIR` checks web's backups and says "1 backup(s) checked, 0 damaged",
    exit 0: db's backups are neither checked nor mentioned. With the global volume missing verify refuses
    ("the backup volume ... is not there (a share not mounted, or a typo?)"): "0 checked must not read as
    all well" holds for a per-VM volume too; the admin should at least be told db's volume is not there."""
    conf, confdir = db_backed_up_elsewhere(host, tmp_path)
    (confdir / "db").write_text("VM_BACKUP_VOLUME=/vmfs/volumes/nas2/db\n")  # the share is gone
    r = hotvcb(host, "verify", "--all", "-g", conf, "-c", str(confdir))
    assert "/vmfs/volumes/nas2/db" in said(r) and "Traceback" not in said(r), said(r)


class _SilentQmp:
    """A QMP socket whose QEMU accepts but never greets (a hung process): status waits on it."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("as_json", [True, False])
def test_status_stopped_by_a_signal_is_unknown_with_its_line_or_json(qemu, sig, as_json):
    """Icinga gives a check its timeout, then SIGTERM; an admin trying the check by hand presses Ctrl-C.
    `hotvcb --qemu DIR status [--json]` waiting on a VM's QMP socket that never answers (a hung QEMU; up to
    30 s) was killed by SIGTERM: exit 143, nothing on stdout; after Ctrl-C it exits 3 but prints only
    "hotvcb: interrupted" on stderr. operations.md: 3 UNKNOWN for "an interrupted run", and "On UNKNOWN the
    JSON is {"status": "UNKNOWN", "message": ..., "checks": []}"; without --json the plugin's first stdout
    line is what the monitor shows, and every other UNKNOWN prints "UNKNOWN: why" there."""
    qmp = _SilentQmp(qemu[0] / "web.qmp")
    try:
        p = subprocess.Popen([sys.executable, "-m", "hotvcb", "--qemu", str(qemu[0]), "status", "-g", str(qemu[1])]
                             + (["--json"] if as_json else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=SRC, env=dict(os.environ, PYTHONPATH=SRC))
        deadline = time.monotonic() + 60
        while not qmp.conns and time.monotonic() < deadline:  # status is waiting for QEMU's greeting
            time.sleep(0.1)
        assert qmp.conns, "status never connected to the QMP socket"
        time.sleep(0.5)
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        qmp.close()
    assert p.returncode == 3, (p.returncode, out, err)
    if as_json:
        report = json.loads(out) if out else {}
        assert report.get("status") == "UNKNOWN" and report.get("checks") == [] and report.get("message"), (out, err)
    else:
        assert out.startswith("UNKNOWN"), (out, err)


def test_a_refusal_whose_sizes_round_to_the_same_value_in_two_units_shows_the_bytes():
    """Today's fix gives the bytes where the two rounded sizes read the same ("needs 3.8 MiB, only 3.8 MiB
    free"), but it compares the two strings: a backup needing exactly 1 MiB with 1 byte less free is refused
    with "needs 1.0 MiB, only 1024.0 KiB free" (1023.999 KiB rounds up), which reads as the same amount: the
    admin sees a false refusal, and no bytes say how far apart the two are."""
    from hotvcb.units import need_and_free

    need, free = need_and_free(1 << 20, (1 << 20) - 1)
    assert "1048576" in need and "1048575" in free, (need, free)
    need, free = need_and_free(1 << 30, (1 << 30) - 4096)  # "1.0 GiB" vs "1024.0 MiB"
    assert str(1 << 30) in need and str((1 << 30) - 4096) in free, (need, free)


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_list_of_an_empty_vm_name_is_refused_not_taken_for_every_vm(qemu, json_flag):
    """A restore script asks `hotvcb list "$VM" --json` for the VM's newest backup and restores
    `.backups[-1].path`. With $VM empty (a typo in the variable's name) hotvcb listed every VM's backups,
    exit 0, and the script went on with another VM's backup. Today every option given an empty value is
    refused ("a variable left empty names nothing"); the VM argument of `list` is the same mistake and
    deserves the same answer, exit 1 and nothing on stdout a script could take for a listing."""
    r = local("--qemu", qemu[0], "list", "", "-g", qemu[1], *json_flag)
    assert r.returncode == 1 and r.stdout == "", said(r)
    assert "Traceback" not in said(r) and r.stderr.strip(), said(r)


@pytest.mark.parametrize("option", ["--max-age", "--snapshot-age"])
def test_status_refuses_nan_for_an_age(qemu, option):
    """`--max-age` is read with float(), which also takes "nan": every comparison with NaN is False, so a VM
    whose newest backup is a month old stays OK for ever, and a month-old user snapshot never WARNs.
    An age that is no duration is refused elsewhere ("'0x10' is not a duration (use e.g. 90s, 30m, 26h,
    7d)", UNKNOWN); "nan" must be too, before the monitor is told all is well."""
    r = local("--qemu", qemu[0], "status", "-g", qemu[1], option, "nan", "--json")
    assert r.returncode == 3, said(r)
    report = json_of(r)
    assert report["status"] == "UNKNOWN" and "nan" in report["message"], report


@needs_root
@pytest.mark.parametrize("where", ["backup volume", "per-VM config folder"])
def test_verify_of_a_vm_by_name_does_not_depend_on_the_current_folder(host, tmp_path, where):
    """The admin looks around the backup share (`cd /mnt/backup/hotvcb; ls` shows web/) and runs
    `hotvcb verify web -g hotvcb.conf`. hotvcb saw that a path `web` exists and verified the VM's folder
    as if it were one backup: "Verifying web ... INCOMPLETE: no STATUS file: this backup never finished",
    "1 backup(s) checked, 1 damaged", exit 6, for a VM whose backups are all good (`hotvcb list web` from
    the same folder lists them good). From the per-VM config folder (`cd vmconf; hotvcb verify web -c .`)
    the VM's own config file is taken for the backup: "web is not a backup", exit 1. A VM name should
    verify the VM's backups wherever the admin stands (a path is a path when it says so: ./web, /...)."""
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    assert hotvcb(host, "backup", "-m", "web", "-g", conf).returncode == 0
    volume = tmp_path / "vol"
    shutil.copytree(host.real(VOLUME), str(volume), symlinks=True)
    conf2 = tmp_path / "local.conf"
    conf2.write_text("VM_BACKUP_VOLUME=%s\n" % volume)
    vmconf = tmp_path / "vmconf"
    vmconf.mkdir()
    (vmconf / "web").write_text("VM_BACKUP_ROTATION_COUNT=3\n")
    elsewhere = local("verify", "web", "-g", conf2, "-c", vmconf)
    assert elsewhere.returncode == 0 and "0 damaged" in elsewhere.stdout, said(elsewhere)  # the copy is good
    if where == "backup volume":
        r = local("verify", "web", "-g", conf2, cwd=volume)
    else:
        r = local("verify", "web", "-g", conf2, "-c", ".", cwd=vmconf)
    assert r.returncode == 0 and "1 backup(s) checked, 0 damaged" in r.stdout, said(r)


@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="a smoke boot needs QEMU")
def test_verify_boot_with_a_per_vm_file_naming_a_repository_does_not_boot_a_stale_folder_backup(tmp_path):
    """web was backed up into folders until its per-VM file switched it to the deduplicating repository
    (VM_BACKUP_REPOSITORY); the old folder backups stay on the volume. The admin's monthly restore test is
    `hotvcb verify --boot web -g hotvcb.conf -c vmconf` (today verify --boot takes the backup's -c "and
    checks them where they went"). hotvcb booted the months-old folder backup and said PASS, naming no
    repository: the admin believes the current backups boot. `verify web -c vmconf` at least warns that
    web's backups are in the repository (`verify web --repo R reads them`); --boot says nothing."""
    from test_outsider_crosshv import esxi_backup

    volume, repo = tmp_path / "vol", tmp_path / "repo"
    esxi_backup(volume, "web")  # the last folder backup before the switch
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % volume)
    vmconf = tmp_path / "vmconf"
    vmconf.mkdir()
    (vmconf / "web").write_text("VM_BACKUP_REPOSITORY=%s\n" % repo)
    r = local("verify", "--boot", "web", "-g", conf, "-c", vmconf, "--boot-accel", "tcg", "--boot-timeout", 60,
              "--console-log", tmp_path / "console.log")
    assert "Traceback" not in said(r), said(r)
    assert str(repo) in said(r), said(r)  # said: booted from there, or why a folder backup is not it


@pytest.mark.parametrize("hosts", ["missing.txt", "folder"])
def test_status_hosts_file_that_cannot_be_read_is_named_as_the_host_list(tmp_path, hosts):
    """The fleet monitor runs `hotvcb status --hosts /etc/hotvcb/fleet.txt -f vms.txt --json`; after a
    config-management run renamed fleet.txt it said UNKNOWN "cannot read VM list file .../fleet.txt". The
    admin checks vms.txt, the VM list, which is fine; the file that is gone is the host list. (A host list
    holding only comments is already called "the host list ... names no host".)"""
    (tmp_path / "folder").mkdir()
    r = local("status", "--hosts", tmp_path / hosts, "--json")
    assert r.returncode == 3, said(r)
    message = json_of(r)["message"]
    assert str(tmp_path / hosts) in message and "VM list" not in message and "host" in message, message


@needs_root
@pytest.mark.parametrize("spelling", ["trailing slash", "datastore uuid"])
def test_a_per_vm_volume_that_is_the_global_one_is_not_read_twice(host, tmp_path, spelling):
    """The per-VM file of `web` was written with the path the admin copied from `pwd` on the host,
    /vmfs/volumes/5f2a...-uuid/hotvcb (or with a trailing slash): the same folder as VM_BACKUP_VOLUME.
    The backup writes to that one folder, but `hotvcb list -c DIR` shows each of web's backups twice, and
    `hotvcb verify --all -c DIR` checks each twice: "2 backup(s) checked" for one backup, and a JSON report
    a script counts with twice the backups there are."""
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    assert hotvcb(host, "backup", "-m", "web", "-g", conf).returncode == 0
    if spelling == "trailing slash":
        same = VOLUME + "/"
    else:
        store = os.path.realpath(host.real("/vmfs/volumes/backup"))
        same = "/vmfs/volumes/%s/hotvcb" % os.path.basename(store)
    vmconf = tmp_path / "vmconf"
    vmconf.mkdir()
    (vmconf / "web").write_text("VM_BACKUP_VOLUME=%s\n" % same)
    r = hotvcb(host, "list", "-g", conf, "-c", str(vmconf), "--json")
    assert r.returncode == 0, said(r)
    assert len(json.loads(r.stdout)["backups"]) == 1, r.stdout
    r = hotvcb(host, "verify", "--all", "-g", conf, "-c", str(vmconf), "--json")
    assert r.returncode == 0, said(r)
    assert len(json.loads(r.stdout)["results"]) == 1, r.stdout


@needs_root
def test_json_before_status_never_runs_a_backup(host, tmp_path):
    """A monitoring command written with --json first, `hotvcb --json status -f vms_to_backup -g F` (the
    order `list --json` users type). `--json` is an unambiguous prefix of the backup's --json-report, so
    hotvcb took the line for a ghettoVCB-style backup: `backup --json-report status -f vms_to_backup -g F`.
    Every check interval it snapshotted and copied every listed production VM, wrote a report file named
    `status` into the current folder, and exited 0 (OK to Nagios) with a backup's log instead of a status.
    An option before `status` must never turn the check into a backup."""
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    vms = tmp_path / "vms_to_backup"
    vms.write_text("web\n")
    work = tmp_path / "cwd"
    work.mkdir()
    r = subprocess.run(on_host(host, "env", "PYTHONPATH=" + SRC, "/bin/python", "-m", "hotvcb", "--json", "status",
                               "-f", str(vms), "-g", conf), capture_output=True, text=True, timeout=180, cwd=str(work),
                       env=dict(os.environ, PYTHONPATH=SRC))
    assert backups(host, "web") == [], (backups(host, "web"), said(r))
    assert not (work / "status").exists() and not os.path.exists(os.path.join(SRC, "status")), said(r)
    assert r.returncode in (2, 3) and json_of(r)["status"] in ("CRIT", "UNKNOWN"), said(r)


@needs_root
@pytest.mark.parametrize("name", ["backup", "status", "list"])
def test_a_vm_named_like_a_command_is_backed_up_ghettovcb_style(host, tmp_path, name):
    """`ghettoVCB.sh -m backup -g F` backs up the VM called "backup" (a backup server's own VM is often
    named so): -m takes the next word whatever it is. Reading options before a command as the command's own
    took that word for the command: `option -m has no value: backup is the command`, and for `-m status`
    an unrecognized -m; the nightly job failed with exit 1."""
    host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")
    r = hotvcb(host, "-m", name, "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, said(r)
    assert len(backups(host, name)) == 1, said(r)
