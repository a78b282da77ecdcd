"""`hotvcb status` on a simulated host in trouble: each problem with its severity, and the exit code."""

import json
import os
import time

import pytest

from hotvcb.store.sidecar import GZ_RECORDS, GZ_VERIFY_SUFFIX
from simhost import VOLUME, db_backed_up_elsewhere, hotvcb, make_host, needs_root, unmounted_share, write_conf

pytestmark = needs_root


def status(host, conf, *extra):
    r = hotvcb(host, "status", "-g", conf, "--json", *extra)
    return r.returncode, json.loads(r.stdout)


def by(report, kind, name):
    return [c for c in report["checks"] if c["kind"] == kind and c["name"] == name]


def test_status_names_every_problem_with_its_severity(tmp_path):
    host = make_host(tmp_path / "host")
    try:
        host.add_datastore("tight", 24 << 20, vmfs=6)
        conf = write_conf(host)
        host.create_vm("fine", "datastore1", [{"size": "4M"}], power="on")
        assert hotvcb(host, "-m", "fine", "-g", conf).returncode == 0
        code, report = status(host, conf)
        assert code == 0 and report["status"] == "OK", report
        [fine] = by(report, "backup", "fine")
        assert fine["severity"] == "OK" and fine["details"]["good_backups"] == 1

        # a leftover snapshot of ours: a run SIGKILLed right after its snapshot
        host.create_vm("crashed", "datastore1", [{"size": "4M"}], power="on")
        os.environ["HOTVCB_CRASH_AT"] = "snapshot-created"
        try:
            assert hotvcb(host, "-m", "crashed", "-g", conf).returncode != 0
        finally:
            del os.environ["HOTVCB_CRASH_AT"]
        # a user snapshot whose delta takes most of its datastore's free space
        big = host.create_vm("big delta", "tight", [{"size": "16M", "format": "eagerzeroedthick"}], power="on",
                             snapshots=["before upgrade"])
        delta = [f for f in os.listdir(host.real("/vmfs/volumes/tight/big delta")) if "-000001" in f]
        for f in delta:
            if not f.endswith("-000001.vmdk"):
                with open(host.real("/vmfs/volumes/tight/big delta/" + f), "r+b") as fh:
                    fh.seek(0, 2)
                    fh.write(os.urandom(6 << 20))
        # delta files no snapshot explains
        host.create_vm("orphan", "datastore1", [{"size": "4M"}], power="on")
        with open(host.real("/vmfs/volumes/datastore1/orphan/orphan-000007.vmdk"), "w") as f:
            f.write("# Disk DescriptorFile\n")

        code, report = status(host, conf)
        assert code == 2 and report["status"] == "CRIT", json.dumps(report, indent=1)
        [ours] = by(report, "snapshot", "crashed")
        assert ours["severity"] == "CRIT" and ours["details"]["ours"] and "which is gone" in ours["message"]
        [user] = by(report, "snapshot", "big delta")
        assert user["severity"] == "CRIT" and user["details"]["snapshot"] == "before upgrade", user
        [orphan] = by(report, "consolidation", "orphan")
        assert orphan["severity"] == "CRIT" and "needs consolidation" in orphan["message"]
        [tight] = by(report, "datastore", "tight")
        assert tight["severity"] in ("WARN", "CRIT") and tight["details"]["free_bytes"] < 4 << 20, tight
        [target] = [c for c in report["checks"] if c["name"] == "backup (backup target)"]
        assert target["severity"] == "OK" and target["details"]["next_run_bytes"] > 0
        assert by(report, "backup", "fine")[0]["severity"] == "OK"

        plain = hotvcb(host, "status", "-g", conf)
        assert plain.returncode == 2
        first = plain.stdout.splitlines()
        assert first[0].startswith("CRIT: ") and first[1].startswith("CRIT")

        r = hotvcb(host, "cleanup", "-g", conf)  # what status told the admin to do
        assert r.returncode == 0, r.stdout + r.stderr
        code, report = status(host, conf)
        assert by(report, "snapshot", "crashed") == []
        assert big  # the user's snapshot is theirs: cleanup never touches it
        assert by(report, "snapshot", "big delta")[0]["severity"] == "CRIT"
    finally:
        host.stop()


def test_an_old_backup_and_a_failed_last_run_are_reported_and_a_broken_config_is_unknown(tmp_path):
    host = make_host(tmp_path / "host")
    try:
        conf = write_conf(host)
        host.create_vm("web", "datastore1", [{"size": "4M"}, {"size": "4M"}], power="on")
        assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
        code, report = status(host, conf, "--max-age", "1s")
        time.sleep(2.1)
        code, report = status(host, conf, "--max-age", "1s")
        assert by(report, "backup", "web")[0]["severity"] == "CRIT"  # older than twice the limit
        host.set_fault("clone.fail_at", "50")
        host.set_fault("clone.match", "web_1.vmdk")
        time.sleep(1.1)
        assert hotvcb(host, "-m", "web", "-g", conf).returncode == 8
        code, report = status(host, conf)
        [web] = by(report, "backup", "web")
        assert web["severity"] == "WARN" and web["message"].startswith("last run was warn"), web
        with open(conf, "a") as f:
            f.write("DISK_BACKUP_FORMAT=floppy\n")
        r = hotvcb(host, "status", "-g", conf)
        assert r.returncode == 3 and r.stdout.startswith("UNKNOWN: ") and "floppy" in r.stdout
        r = hotvcb(host, "status", "-g", write_conf(host, name="other.conf", VM_BACKUP_VOLUME=VOLUME),
                   "-f", str(tmp_path / "missing-list"))
        assert r.returncode == 3
    finally:
        host.stop()


@needs_root
def test_a_refused_backup_to_an_unmounted_volume_records_nothing_on_the_hosts_own_disk(tmp_path):
    """VM_BACKUP_VOLUME is a share's mount point (/etc/fstab) and the share did not mount: the run is refused,
    and its last-run record must not go into the empty mount point (the host's own disk, hidden by the share
    once mounted): store/lastrun.py writes nothing under an unmounted share."""
    host = make_host(tmp_path / "host")
    try:
        point = unmounted_share(host)
        host.create_vm("db", "datastore1", [{"size": "1M"}])
        r = hotvcb(host, "-m", "db", "-g", write_conf(host, VM_BACKUP_VOLUME=point))
        assert r.returncode != 0 and "nothing is mounted there" in r.stdout + r.stderr, r.stdout + r.stderr
        assert os.listdir(host.real(point)) == []
    finally:
        host.stop()


def test_status_of_every_host_in_a_list_over_ssh(tmp_path):
    """One host reachable over a real sshd (commands run inside the simulated host), one not."""
    import subprocess
    import sys

    from sshd import available
    from sshsite import host_sshd
    from simhost import REPO

    if not available():
        import pytest

        pytest.skip("no sshd on this machine (scripts/install-test-deps installs openssh-server)")
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
        conf = write_conf(host)
        assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
        env = dict(os.environ, PYTHONPATH=REPO)
        with host_sshd(host, tmp_path / "sshd") as sshd:
            hosts = tmp_path / "hosts"
            hosts.write_text("# the fleet\n%s:%d\nroot@127.0.0.1:1\n" % (sshd.target, sshd.port))
            argv = [sys.executable, "-m", "hotvcb", "--identity", sshd.identity, "--known-hosts", sshd.known_hosts,
                    "--ssh-option", "ConnectTimeout=5", "status", "--hosts", str(hosts), "-g", conf, "--json"]

            def run():
                r = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
                return r.returncode, json.loads(r.stdout)

            code, report = run()
            assert code == 3 and report["status"] == "UNKNOWN", report  # one host unreachable, none CRIT
            up, down = report["hosts"]
            assert up["status"] == "OK" and [c["name"] for c in up["checks"] if c["kind"] == "backup"] == ["web"]
            assert down["host"] == "root@127.0.0.1:1" and down["status"] == "UNKNOWN" and down["message"]

            host.create_vm("never", "datastore1", [{"size": "4M"}], power="on")  # never backed up: CRIT
            code, report = run()
            assert code == 2 and report["status"] == "CRIT"  # CRIT anywhere outranks an unreachable host
    finally:
        host.stop()


def test_a_check_message_holding_a_name_or_path_from_the_host_stays_on_its_line(tmp_path):
    """A check's message may quote the host or the backup volume: here a manifest's path, which holds the
    VM's name, and the manifest's own message. A line feed or tab there is escaped as in the name's field,
    so each check is one line a monitor reads (no forged `OK` line); --json keeps the text as it is."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    for vm, name in (("lf", "lf|0AOK forged"), ("tab", "t|09b")):
        host.create_vm(vm, "datastore1", [{"size": "2M"}])
        vmx = host.real("/vmfs/volumes/datastore1/%s/%s.vmx" % (vm, vm))
        with open(vmx) as f:
            text = f.read().replace('displayName = "%s"' % vm, 'displayName = "%s"' % name)
        with open(vmx, "w") as f:
            f.write(text)
    for name, manifest in (("lf\nOK forged", "not json"),
                           ("t\tb", json.dumps({"format": "hotvcb-backup", "result": "error",
                                                "message": "copy failed\nOK   backup t: fine\tdone"}))):
        folder = host.real("%s/%s/%s-2026-12-01_10-00-00" % (VOLUME, name, name))
        os.makedirs(folder)
        for file, text in (("STATUS.ok", ""), ("hotvcb.json", manifest)):
            with open(os.path.join(folder, file), "w") as f:
                f.write(text)
    r = hotvcb(host, "status", "-g", conf)
    lines = r.stdout.splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert not [l for l in lines if not l.startswith(("CRIT", "WARN", "OK  "))] and "\t" not in r.stdout, r.stdout
    assert [l.split()[1] for l in lines[1:]].count("backup") == 2, r.stdout
    assert "manifest says error: copy failed\\nOK   backup t: fine\\tdone" in r.stdout, r.stdout
    code, report = status(host, conf)
    assert any("copy failed\nOK   backup t: fine\tdone" in c["message"] for c in report["checks"]), report


def test_a_fifo_planted_as_a_backups_side_records_never_hangs_list_or_status(tmp_path):
    """The last run's result and a .gz backup's verify record lie on a volume others may write to: a FIFO
    there (which an open would wait on for ever) is an unreadable record, not a hang."""
    host = make_host(tmp_path / "host")
    try:
        conf = write_conf(host, ENABLE_COMPRESSION=1)
        host.create_vm("packed", "datastore1", [{"size": "4M"}], power="on")
        assert hotvcb(host, "-m", "packed", "-g", conf).returncode == 0
        host.set_fault("snapshot.create", "fail")  # a failed run leaves its result beside the backups
        assert hotvcb(host, "-m", "packed", "-g", conf).returncode != 0
        host.clear_faults()
        root = host.real(VOLUME + "/packed")
        records = os.path.join(root, GZ_RECORDS)
        planted = [os.path.join(records, n) for n in os.listdir(records) if n.endswith(GZ_VERIFY_SUFFIX)] + \
            [os.path.join(root, n) for n in os.listdir(root) if n.startswith(".hotvcb-last-run")]
        assert len(planted) == 2, planted
        for path in planted:
            os.unlink(path)
            os.mkfifo(path)
        for argv in (["list", "-g", conf], ["status", "-g", conf], ["verify", "--all", "-g", conf]):
            r = hotvcb(host, *argv, timeout=60)
            assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
            assert "packed" in r.stdout + r.stderr, (argv, r.stdout + r.stderr)
    finally:
        host.stop()


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_status_run_that_cannot_tell_is_unknown_to_a_monitor_and_other_commands_keep_their_codes(
        tmp_path, monkeypatch, capsys, error):
    """An internal error or a Ctrl-C in `status` is UNKNOWN (3): its 1 and 2 read WARN and CRIT to Nagios."""
    from hotvcb import cli, config

    def broken(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(config, "load_settings", broken)
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % tmp_path)
    assert cli.main(["status", "-g", str(conf)]) == 3
    assert cli.main(["list", "-g", str(conf)]) == (1 if isinstance(error, RuntimeError) else 2)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("internal error" if isinstance(error, RuntimeError) else "interrupted") == 2


def test_a_fleet_line_holding_an_ipv6_address(tmp_path):
    """`root@::1` is the address (no port: its last group was taken for one), `[addr]:port` gives one."""
    from argparse import Namespace

    from hotvcb.commands.runtarget import targets_in

    fleet = tmp_path / "fleet"
    fleet.write_text("root@::1\nroot@fe80::20c:29ff:fe12:3456\nroot@[fe80::1]:2222\n[::1]\nesxi01:23\nesxi02\n")
    got = [(t.ssh.destination, t.ssh.port) for _, t in targets_in(str(fleet), Namespace(port=2200))]
    assert got == [("root@::1", 2200), ("root@fe80::20c:29ff:fe12:3456", 2200), ("root@fe80::1", 2222),
                   ("::1", 2200), ("esxi01", 23), ("esxi02", 2200)]


def test_a_fleet_line_may_end_in_a_comment(tmp_path):
    """`root@esxi01:2222  # rack 3` was taken whole as the host (UNKNOWN, "could not resolve"); the line's
    name in the report is the host as written, without its comment."""
    from argparse import Namespace

    from hotvcb.commands.runtarget import targets_in

    fleet = tmp_path / "fleet"
    fleet.write_text("root@esxi01:2222  # rack 3\nroot@[fe80::1] # lab\n#esxi03\n")
    got = [(line, t.ssh.destination, t.ssh.port) for line, t in targets_in(str(fleet), Namespace(port=None))]
    assert got == [("root@esxi01:2222", "root@esxi01", 2222), ("root@[fe80::1]", "root@fe80::1", None)]


def test_status_list_and_restore_latest_with_the_backups_per_vm_files_look_where_each_vm_went(tmp_path):
    """`-c` as the backup has it (restore: `--vm-configs`, its -c is the vms_to_restore file): a VM
    whose file sets VM_BACKUP_VOLUME is judged, listed and restored from there, and its target's room
    counted there; a file the backup refuses is that VM's CRIT (its backup fails each night); a -c
    folder that is not there is UNKNOWN, as a missing -f list is."""
    host = make_host(tmp_path / "host")
    try:
        conf, confdir = db_backed_up_elsewhere(host, tmp_path)
        r = hotvcb(host, "status", "-g", conf, "-c", str(confdir))
        assert r.returncode == 0 and "OK   backup        db: newest good backup" in r.stdout, r.stdout
        assert "ds5 (backup target)" in r.stdout, r.stdout
        rows = json.loads(hotvcb(host, "list", "--json", "-g", conf, "-c", str(confdir)).stdout)["backups"]
        assert sorted((b["vm"], b["path"].rsplit("/", 2)[0], b["good"]) for b in rows) == [
            ("db", "/vmfs/volumes/ds5/db-only", True), ("web", VOLUME, True)], rows
        latest = ("restore", "--latest", "db", "-g", conf, "--datastore", "datastore1", "--name", "db2", "-d", "1")
        r = hotvcb(host, *latest, "--vm-configs", str(confdir))
        assert r.returncode == 0 and "/vmfs/volumes/ds5/db-only/db/db-" in r.stdout, r.stdout + r.stderr
        r = hotvcb(host, *latest)
        assert r.returncode == 1 and "no good backup of 'db' under %s" % VOLUME in r.stdout + r.stderr, r.stdout
        r = hotvcb(host, "restore", "-c", str(tmp_path / "vms_to_restore"), "--vm-configs", str(confdir))
        assert r.returncode == 1 and "give --latest VM too" in r.stdout + r.stderr, r.stdout + r.stderr
        (confdir / "db").write_text("VM_BACKUP_ROTATION_COUNT=many\n")
        r = hotvcb(host, "status", "-g", conf, "-c", str(confdir))
        assert r.returncode == 2 and "CRIT backup        db: its per-VM config is refused" in r.stdout, r.stdout
        r = hotvcb(host, "status", "-g", conf, "-c", str(tmp_path / "nothing"))
        assert r.returncode == 3 and "no such folder of per-VM configs" in r.stdout, r.stdout
    finally:
        host.stop()
