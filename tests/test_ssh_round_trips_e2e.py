"""SSH mode without a round trip per file (issue 8): `hotvcb list` reads a whole backup volume
in one scan; a backup runs hotvcb on the host itself where the host's python can (one session
per run, ≤ 15 per VM is the target), and file by file keeps its sessions bounded where it
cannot. Sessions are counted by tests/sshsite.py: behaviour, not time."""

import json
import os
import stat
import subprocess

import pytest

from simhost import backup_root, hotvcb, needs_root, sealed, write_conf, VOLUME
from sshd import needs_sshd
from sshsite import replace_host_python, site  # noqa: F401  (the fixture)

pytestmark = [needs_root, needs_sshd]
PY37 = "/root/.pyenv/versions/3.7.16/bin/python3.7"


def test_ssh_list_is_one_look_however_many_backups(host, site, tmp_path):
    names = ["vm %d" % i for i in range(4)]
    for name in names:
        host.create_vm(name, "datastore1", [{"size": "4M"}])
    conf = write_conf(host)
    for _ in range(2):
        r = hotvcb(host, "backup", "-a", "-g", conf, "-w", tmp_path / "work")
        assert r.returncode == 0, r.stdout + r.stderr
    local = hotvcb(host, "list", "--json", "--volume", VOLUME)
    r, trips = site.run("list", "--json", "--volume", VOLUME)
    assert r.returncode == 0, r.out
    def rows(text):
        return [{k: v for k, v in b.items() if k != "age_seconds"} for b in json.loads(text)["backups"]]

    assert rows(r.stdout) == rows(local.stdout), "the same answer as on the host"
    assert [b["status"] for b in rows(r.stdout)] == ["good"] * 8
    assert len(trips) == 1, trips  # the scan, which brings the host's clock too (nothing per VM, backup or file)


def test_ssh_list_ages_backups_by_the_hosts_clock_from_its_one_look(host, site, tmp_path):
    """The one round trip also brings the host's clock: ages come out right where this box's zone is another."""
    host.create_vm("vm", "datastore1", [{"size": "4M"}])
    assert hotvcb(host, "backup", "-m", "vm", "-g", write_conf(host), "-w", tmp_path / "work").returncode == 0
    r, trips = site.run("list", "--json", "--volume", VOLUME, TZ="America/New_York")
    assert r.returncode == 0 and len(trips) == 1, (r.out, trips)
    [row] = json.loads(r.stdout)["backups"]
    assert 0 <= row["age_seconds"] < 600, row  # not 5 hours off


def test_a_backup_run_on_the_host_is_one_round_trip_and_sends_hotvcb_once(host, site, tmp_path):
    for i in range(3):
        host.create_vm("vm %d" % i, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    r, trips = site.run("backup", "-m", "vm 0", "-g", conf, "-l", tmp_path / "client.log")
    assert r.returncode == 0, r.out
    assert "Final status: All VMs backed up OK!" in r.stdout and "HOST: local (" in r.stdout
    assert len(sealed(host, "vm 0")) == 1
    assert len(trips) == 1, "\n".join(trips)  # look for the build, send it, run: one session (target ≤ 15)
    (build,) = site.builds()
    first = os.stat(str(site.folder / build))
    assert "Final status: All VMs backed up OK!" in (tmp_path / "client.log").read_text(), \
        "-l names a file on this machine, and it gets the host's lines"
    assert sorted(os.listdir(str(site.folder))) == site.kept(), "the run's folder (config copies) is removed"
    assert site.kept() == [build[: -len(".pyz")], build] and (site.folder / site.kept()[0] / ".built").is_file()

    for name, pids in (("run-killed", "999999 999998"), ("run-going", "999999 %d" % os.getpid())):
        (site.folder / name).mkdir()  # runs whose relay was killed: config copies of one to remove
        (site.folder / name / "pid").write_text(pids + "\n")
    r, trips = site.run("backup", "-a", "-g", conf, "--json-report", tmp_path / "report.json")
    assert sorted(os.listdir(str(site.folder))) == site.kept() + ["run-going"], "only a dead run's folder is removed"
    assert r.returncode == 0, r.out
    assert len(trips) == 1, "\n".join(trips)  # three VMs: still one (target ≤ 45)
    assert [len(sealed(host, "vm %d" % i)) for i in range(3)] == [2, 1, 1]
    again = os.stat(str(site.folder / build))
    assert site.builds() == [build] and again.st_ino == first.st_ino, \
        "the second run sent nothing: the host's copy was re-used"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["exit_code"] == 0 and sorted(v["vm"] for v in report["vms"]) == ["vm 0", "vm 1", "vm 2"]

    (site.folder / build).write_bytes(b"garbage")  # a damaged copy on the host is never run
    r, trips = site.run("backup", "-m", "vm 2", "-g", conf)
    assert r.returncode == 0 and len(trips) == 1, r.out
    assert site.builds() == [build] and os.stat(str(site.folder / build)).st_size == first.st_size


def test_a_build_folder_others_may_write_to_is_not_used(host, site):
    """/tmp/hotvcb-onhost is root's alone: a pyz in a folder others can write could be swapped."""
    site.folder.mkdir(mode=0o777)
    site.folder.chmod(0o777)
    r, trips = site.run("status")
    assert "is not a private folder of this user" in r.stderr and "going file by file over SSH" in r.stderr, r.out
    assert site.builds() == [] and len(trips) > 1


def test_the_client_mails_the_report_of_a_run_on_the_host(host, site):
    """The run on the host hands its report back; the Linux box sends the one mail (ESXi's firewall
    blocks outgoing SMTP by default), with the host's log and the final status."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail part")
    host.create_vm("mailed", "datastore1", [{"size": "4M"}], power="on")
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                          EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        r, trips = site.run("backup", "-m", "mailed", "-g", conf, "-j", "nightly")
        assert r.returncode == 0 and len(trips) == 1, r.out
    [mail] = server.messages
    assert mail.message["Subject"].endswith("nightly: All VMs backed up OK!"), mail.message["Subject"]
    parts = {p.get_content_type(): p.get_content() for p in mail.message.walk() if not p.is_multipart()}
    assert "hotvcb LOG START" in parts["text/plain"] and "mailed" in parts["text/html"]


def test_status_verify_and_cleanup_run_on_the_host_too(host, site, tmp_path):
    """The same answers as file by file (~20 round trips per VM or backup each), in one round trip (cleanup: two)."""
    for i in range(2):
        host.create_vm("vm %d" % i, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    r, _ = site.run("backup", "-a", "-g", conf)
    assert r.returncode == 0, r.out
    flat = os.path.join(backup_root(host, "vm 1"), sealed(host, "vm 1")[0], "vm 1-flat.vmdk")
    with open(flat, "r+b") as f:  # damage one backup: verify's answer and exit code must say so
        f.seek(4096)
        f.write(b"rot")

    def checks(text):
        return sorted((c["severity"], c["kind"], c["name"]) for c in json.loads(text)["checks"])

    def verified(text):
        out = json.loads(text)
        return [(v["path"], v["status"], [p["file"] for p in v["problems"]]) for v in out["results"]], out["skipped"]

    for args, answer in ((["status", "--json"], checks), (["verify", "--all", "--json"], verified),
                         (["cleanup"], lambda text: "cleanup: 0 leftover(s) removed" in text)):
        here, trips = site.run(*args, "-g", conf)
        # cleanup reads the host's lock first: a dead file-by-file run of this box is told by its pid (lock.gone_here)
        assert len(trips) == (2 if args == ["cleanup"] else 1), (args, trips)
        old, old_trips = site.run(*args, "-g", conf, "--file-by-file")
        assert len(old_trips) > 10, (args, old_trips)
        assert here.returncode == old.returncode, (args, here.out, old.out)
        assert answer(here.stdout) == answer(old.stdout), (args, here.out, old.out)
    assert old.returncode == 0 and answer(here.stdout), here.out
    assert verified(site.run("verify", "--all", "--json", "-g", conf)[0].stdout)[0][1][1] == "damaged"


def test_restore_runs_on_the_host_too_so_a_gz_backup_restores_over_ssh(host, site, tmp_path):
    host.create_vm("src", "datastore1", [{"size": "4M"}])
    conf = write_conf(host, ENABLE_COMPRESSION=1)
    r, _ = site.run("backup", "-m", "src", "-g", conf)
    assert r.returncode == 0 and [b for b in os.listdir(backup_root(host, "src")) if b.endswith(".gz")], r.out
    r, trips = site.run("restore", "--latest", "src", "-g", conf, "--datastore", "ds5", "--name", "copy")
    assert r.returncode == 0, r.out
    assert "All VMs restored OK!" in r.stdout and len(trips) == 1, trips
    assert "copy" in {host.display_name(k) for k in host.state()["vms"]}
    restored = host.real("/vmfs/volumes/ds5/copy")
    (disk,) = [f for f in os.listdir(restored) if f.endswith(".vmdk") and "-flat" not in f]
    src = host.real("/vmfs/volumes/datastore1/src/src.vmdk")
    same = subprocess.run(["qemu-img", "compare", src, os.path.join(restored, disk)], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr


def test_file_by_file_keeps_its_round_trips_bounded(host, site, tmp_path):
    host.create_vm("small", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    r, trips = site.run("backup", "--file-by-file", "-m", "small", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.out
    assert "HOST: ssh://" in r.out
    assert len(sealed(host, "small")) == 1
    # 76 before issue 8's batching; the trust work adds ~8 (the host's id and run lock, the run's
    # record, the power-off marker, a look at /etc/fstab); +1: the run lock read right before the
    # snapshot (store/lock.py: a run whose lock was taken over while it was stopped changes no VM); +1: the
    # host's clock, once per run (Shell.now: backups are named by the host's wall clock, not the client's zone);
    # +3: the snapshot request's marker, looked for, written and removed (a killed run's request hostd may still
    # finish is waited for by the next run: jobs/snapshot_asked.await_snapshot); +1: that marker rewritten once the
    # snapshot shows (a run killed after its removal must not cost the next run a minute's wait for it)
    assert len(trips) <= 62, "\n".join(trips)


def _python_of_the_host(host, target):
    """Point (or, target None, hide) the host's python and python3: an older ESXi's state."""
    def put(path):
        if target is None:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # an overlayfs whiteout
        else:
            os.symlink(target, path)

    replace_host_python(host, put)


@pytest.mark.parametrize("python", ["missing", "3.7"])
def test_a_host_without_a_usable_python_is_served_file_by_file(host, site, tmp_path, python):
    """A backup says so in its log (and ESXi 5.5/6.5 are backed up so in test_ssh_old_esxi.py)."""
    if python == "3.7" and not os.path.exists(PY37):
        pytest.skip("no Python 3.7 at %s" % PY37)
    _python_of_the_host(host, None if python == "missing" else PY37)
    host.create_vm("old", "datastore1", [{"size": "4M"}], power="on")
    if python == "missing":
        r, trips = site.run("backup", "-m", "old", "-g", write_conf(host))
        assert "HOST: ssh://" in r.out and len(sealed(host, "old")) == 1
    else:  # the same decision for every command: status is the quickest to show it
        r, trips = site.run("status", "-g", write_conf(host))
        assert "old" in r.stdout and len(trips) > 1
    assert r.returncode in (0, 2), r.out  # status: CRIT, no backup of `old` yet
    why = "it has no python" if python == "missing" else "its python is 3.7 (hotvcb needs 3.8)"
    assert "SSH mode: hotvcb cannot run on %s (%s): going file by file over SSH" % (
        site.sshd.target, why) in r.out
    assert not os.path.exists(str(site.folder)) or site.builds() == [], "nothing was sent"
