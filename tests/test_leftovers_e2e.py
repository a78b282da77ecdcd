"""Debts from the last stop's closing note, each through the CLI: the mail gate decided in one place;
the scratch folders of killed restores found by `hotvcb cleanup`."""

import glob
import os

from qemuvm import kill_tree
from simhost import VOLUME, hotvcb, hotvcb_background, needs_root, wait_for, write_conf

pytestmark = needs_root


def test_mail_alert_imports_the_mailer_only_for_a_run_it_mails(host, tmp_path, monkeypatch):
    """EMAIL_ALERT=1 mails only runs that did not end OK; an OK run must not pay for smtplib, ssl and
    email (~0.1 s), and a failed one must still be mailed (here: the relay refuses, which is logged)."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    host.create_vm("vm", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, EMAIL_ALERT=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=1, EMAIL_TLS="none",
                      EMAIL_TO="admin@example.com")
    ok = hotvcb(host, "-m", "vm", "-g", conf, "-w", tmp_path / "w")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "hotvcb.notify" not in ok.stderr and "e-mail" not in ok.stdout, ok.stdout + ok.stderr
    failed = hotvcb(host, "-m", "Gone VM", "-g", conf, "-w", tmp_path / "w")
    assert failed.returncode != 0, failed.stdout + failed.stderr
    assert "hotvcb.notify" in failed.stderr and "e-mail report not sent" in failed.stdout, failed.stdout


def _scratch(host):
    """Our restores' scratch folders and their records, in datastore1 and its folder `restored`."""
    root = host.real("/vmfs/volumes/datastore1")
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, ".hotvcb-extract-*"))
                  + glob.glob(os.path.join(root, "restored", ".hotvcb-extract-*")))


def _unfinished(host):
    """The restores' unfinished VM folders and their records in datastore1."""
    root = host.real("/vmfs/volumes/datastore1")
    return glob.glob(root + "/*.hotvcb-restoring") + glob.glob(root + "/*/*.hotvcb-restoring") \
        + glob.glob(root + "/.hotvcb-restoring-*.owner")


def test_cleanup_removes_the_scratch_folders_of_killed_restores_only(host, tmp_path):
    """A restore from a .gz or a repository writes the whole backup into a scratch folder on the
    target datastore first. SIGKILLed, it cannot remove it: `hotvcb cleanup` must, and say so, but
    never while its restore still runs (here: both restores in a slow clone)."""
    host.create_vm("web", "datastore1", [{"size": "8M"}])
    w = tmp_path / "w"
    r = hotvcb(host, "backup", "-m", "web", "-g", write_conf(host, "gz.conf", ENABLE_COMPRESSION=1), "-w", w)
    assert r.returncode == 0, r.stdout + r.stderr
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "--repo", "/vmfs/volumes/backup/repo", "-w", w)
    assert r.returncode == 0, r.stdout + r.stderr
    [gz] = glob.glob(host.real(VOLUME + "/web/*.gz"))
    os.makedirs(host.real("/vmfs/volumes/datastore1/restored"))
    host.set_fault("clone.delay", "120")
    restores = [
        hotvcb_background(host, "restore", VOLUME + "/web/" + os.path.basename(gz), "--datastore",
                          "datastore1/restored", "--name", "from gz", "--format", "zeroedthick"),
        hotvcb_background(host, "restore", "--repo", "/vmfs/volumes/backup/repo", "--latest", "web", "--datastore",
                          "datastore1", "--name", "from repo", "--format", "zeroedthick")]
    try:
        wait_for(lambda: len([f for f in _unfinished(host) if not f.endswith(".owner")]) == 2, 120,
                 "both restores to clone")
        running = _scratch(host)
        assert len(running) == 4, running  # two folders, two records
        r = hotvcb(host, "cleanup", "-g", conf)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("scratch folder of a running restore") == 2, r.stdout
        assert r.stdout.count("unfinished VM folder of a running restore") == 2, r.stdout
        assert _scratch(host) == running and len(_unfinished(host)) == 4  # two VM folders, two records
    finally:
        for p in restores:
            kill_tree(p.pid)
            p.communicate()
    r = hotvcb(host, "cleanup", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("left by a restore that died") == 4, r.stdout  # scratch and VM folders
    assert _scratch(host) == [] and _unfinished(host) == [], r.stdout
    r = hotvcb(host, "cleanup", "-g", conf)
    assert "left by a restore that died" not in r.stdout and "cleanup: 0 leftover(s) removed" in r.stdout, r.stdout


def test_the_per_vm_volume_marker_lives_only_while_its_backup_is_written(host, tmp_path):
    """A backup a per-VM file sends to its own volume names that volume in the VM's folder while it is
    written (for `hotvcb cleanup`, which has no -c: tests/test_outsider_s28compat.py); a run that ends
    leaves none, a run without per-VM volumes writes none, and cleanup says of a marker naming no
    path that it ignores it, and goes on."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text("VM_BACKUP_VOLUME=/vmfs/volumes/ds5/own\n")
    conf = write_conf(host)
    markers = lambda: glob.glob(host.real("/vmfs/volumes/datastore1/db/.hotvcb-backup-volume.*"))  # noqa: E731
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir, "-w", tmp_path / "w")
    assert r.returncode == 0 and not markers(), r.stdout + r.stderr
    assert os.listdir(host.real("/vmfs/volumes/ds5/own/db"))
    with open(host.real("/vmfs/volumes/datastore1/db/.hotvcb-backup-volume.db.vmx"), "w") as f:
        f.write("ds5/own\n")
    r = hotvcb(host, "cleanup", "-g", conf, "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "names no backup volume; ignored" in r.stdout, r.stdout
