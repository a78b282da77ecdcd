"""Testers' notes on the CLI (session 29), each pinned through the public command line: what a
monitor, a mistyped path or an empty variable made hotvcb say."""

import json
import os
import shutil

import pytest

from localcli import local, qemu, said  # noqa: F401  (qemu: the fixture)
from simhost import VOLUME, db_backed_up_elsewhere, hotvcb, needs_root, write_conf

@needs_root
def test_status_names_a_folder_that_is_no_repository_once(host):
    """`status --repo FOLDER` of a folder holding no repository said "repository F: repository F: no hotvcb
    repository there": the error from opening it already names the folder."""
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    os.makedirs(host.real("/vmfs/volumes/backup/notrepo"))
    r = hotvcb(host, "status", "-g", conf, "--json", "--repo", "/vmfs/volumes/backup/notrepo")
    [web] = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup"]
    assert r.returncode == 2 and web["severity"] == "CRIT", r.stdout
    assert web["message"].count("/vmfs/volumes/backup/notrepo") == 1, web["message"]
    assert "no hotvcb repository there" in web["message"], web["message"]


def test_a_refusal_for_room_shows_the_two_sizes_apart_when_they_round_alike():
    """"needs 3.8 MiB, only 3.8 MiB free": a refusal whose two numbers read the same looks false; where
    the rounded sizes meet, the bytes say how far apart they are."""
    from hotvcb.units import need_and_free

    assert need_and_free(3984589, 3984588) == ("3.8 MiB (3984589 bytes)", "3.8 MiB (3984588 bytes)")
    assert need_and_free(5 << 20, 4 << 20) == ("5.0 MiB", "4.0 MiB")


@pytest.mark.parametrize("args", [(), ("web",), ("--json",)])
def test_list_of_a_volume_that_is_not_there_is_an_error_naming_it(qemu, tmp_path, args):
    """`list --volume /mnt/bakcup` (a typo) said "no backups under /mnt/bakcup", exit 0: read as "the
    backups are gone", or by a script as a volume with nothing in it."""
    missing = tmp_path / "bakcup"
    r = local("--qemu", qemu[0], "list", "--volume", missing, *args)
    assert r.returncode == 1 and str(missing) in r.stderr and "no backups" not in said(r), said(r)
    assert "Traceback" not in said(r) and r.stdout == "", said(r)


@pytest.mark.parametrize("as_json", [False, True])
def test_status_of_a_host_with_no_vm_at_all_is_not_ok(qemu, as_json):
    """`status` of an empty QMP folder (every VM shut down, or the sockets moved) said "OK ... 0 CRIT, 0 WARN,
    0 OK", exit 0, while `backup -a` of it ends "No VMs backed up!": nothing watched is not OK."""
    r = local("--qemu", qemu[0], "status", "-g", qemu[1], *(["--json"] if as_json else []))
    assert r.returncode == 2, said(r)
    if as_json:
        report = json.loads(r.stdout)
        assert report["status"] == "CRIT" and [c["severity"] for c in report["checks"]] == ["CRIT"], report
        assert "no VM" in report["checks"][0]["message"], report
    else:
        assert r.stdout.startswith("CRIT") and "no VM" in r.stdout, said(r)


@pytest.mark.parametrize("stray", [["--jsn"], ["--hots", "esxi01"], ["-x"]])
def test_a_stray_option_before_status_is_a_usage_error_naming_it(qemu, stray):
    """`hotvcb --jsn status --json` (a typo before the command) was read as a backup's flags: exit 1, no JSON,
    argparse's complaint about the backup's options. A monitor owes UNKNOWN (3) and its JSON, naming it."""
    r = local("--qemu", qemu[0], *stray, "status", "-g", qemu[1], "--json")
    assert r.returncode == 3, said(r)
    report = json.loads(r.stdout)
    assert report["status"] == "UNKNOWN" and stray[0] in report["message"], report
    assert "hotvcb: error: unrecognized option %s" % stray[0] in r.stderr, said(r)


def test_a_stray_option_before_another_command_names_it_and_backup_flags_still_mean_backup(qemu):
    r = local("--jsn", "list", "-g", qemu[1])
    assert r.returncode == 1 and "unrecognized option --jsn" in r.stderr and "hotvcb backup" not in r.stderr, said(r)
    r = local("--qemu", qemu[0], "-a", "-g", qemu[1])  # ghettoVCB style: `backup -a -g F`
    assert r.returncode == 7 and "No VMs backed up!" in said(r), said(r)


@pytest.mark.parametrize("option, args", [
    ("--volume", ("list", "--volume", "")),
    ("--repo", ("list", "--repo", "")),
    ("--volume", ("verify", "--all", "--volume=")),
    ("--repo", ("backup", "-a", "--repo", "")),
    ("-c", ("-a", "-c", "")),
])
def test_an_option_given_an_empty_value_is_a_usage_error_naming_it(qemu, option, args):
    """`--volume "$VOL"` with $VOL unset was taken for no --volume: `list` listed the configured volume,
    `backup --repo ""` backed up to VM_BACKUP_VOLUME instead of the repository the admin meant."""
    r = local("--qemu", qemu[0], *args, "-g", qemu[1])
    assert r.returncode == 1 and "argument %s: an empty value" % option in r.stderr, said(r)
    assert "Backing up" not in said(r) and "no backups" not in said(r), said(r)


def test_status_given_an_empty_value_is_unknown_with_its_json(qemu):
    r = local("--qemu", qemu[0], "status", "-g", qemu[1], "--repo", "", "--json")
    assert r.returncode == 3, said(r)
    report = json.loads(r.stdout)
    assert report["status"] == "UNKNOWN" and "--repo" in report["message"], report


@needs_root
def test_verify_with_the_backups_per_vm_files_checks_the_backups_they_sent_elsewhere(host, tmp_path):
    """A VM whose per-VM file sets VM_BACKUP_VOLUME has its backups there; `status` and `list` look there
    with `-c`, but `verify --all` took no -c: it passed over them, "1 backup(s) checked, 0 damaged", and
    `verify db` said it had no backups."""
    conf, confdir = db_backed_up_elsewhere(host, tmp_path)
    r = hotvcb(host, "verify", "--all", "-g", conf, "-c", str(confdir), "--json")
    assert r.returncode == 0, said(r)
    checked = sorted(x["path"].rsplit("/", 2)[0] for x in json.loads(r.stdout)["results"])
    assert checked == sorted(["/vmfs/volumes/ds5/db-only", VOLUME]), checked
    r = hotvcb(host, "verify", "db", "-g", conf, "-c", str(confdir))
    assert r.returncode == 0 and "/vmfs/volumes/ds5/db-only/db/db-" in r.stdout, said(r)
    # damage in the backup only the per-VM volume holds is found
    [flat] = [os.path.join(root, f) for root, _, files in os.walk(host.real("/vmfs/volumes/ds5/db-only"))
              for f in files if f.endswith("-flat.vmdk")]
    with open(flat, "r+b") as f:
        f.write(b"\xff" * 512)
    r = hotvcb(host, "verify", "--all", "-g", conf, "-c", str(confdir))
    assert r.returncode == 4 and "2 backup(s) checked, 1 damaged" in r.stdout, said(r)


needs_qemu_system = pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="a smoke boot needs QEMU")


def smoke_boot(backup, console, timeout):
    return local("verify", "--boot", backup, "--boot-accel", "tcg", "--boot-timeout", timeout, "--console-log", console)


@needs_qemu_system
def test_a_console_log_named_again_keeps_what_it_held(tmp_path):
    """`--console-log FILE` emptied FILE: the console of last night's boot (or any file the admin named by
    mistake) was lost. The boot's console is added after what the file holds."""
    from test_outsider_crosshv import esxi_backup

    backup = esxi_backup(tmp_path / "vol", "web")
    console = tmp_path / "console.log"
    console.write_bytes(b"an earlier boot's console\n")
    r = smoke_boot(backup, console, 60)
    assert r.returncode == 0 and "PASS" in r.stdout, said(r)
    text = console.read_bytes()
    assert text.startswith(b"an earlier boot's console\n") and b"hotvcb-guest login:" in text, text


@needs_qemu_system
def test_an_earlier_boots_sign_of_life_in_the_console_log_does_not_pass_a_backup_that_does_not_boot(tmp_path):
    """What the file held before is not this boot's console: its `login:` must not pass a dead backup."""
    from test_outsider_crosshv import esxi_backup, seal

    backup = esxi_backup(tmp_path / "vol", "web")
    with open(os.path.join(backup, "disk-flat.vmdk"), "r+b") as f:
        f.write(bytes(512))  # no boot sector: this backup cannot boot
    seal(backup, "web", [("scsi0:0", ["disk.vmdk", "disk-flat.vmdk"])])
    console = tmp_path / "console.log"
    console.write_bytes(b"hotvcb-guest login: \n")
    r = smoke_boot(backup, console, 5)
    assert r.returncode == 6 and "FAIL" in r.stdout, said(r)
    assert console.read_bytes().startswith(b"hotvcb-guest login: \n")
