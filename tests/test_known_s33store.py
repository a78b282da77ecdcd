"""Testers' notes (session 33, store): what status names after a crash, whose failed backups rotation may
remove, a .gz restore's room, old writers' .gz records, how far a .gz is read, overlay ages across time
zones, and on-host builds dated ahead of the clock; each pinned through the public CLI or API."""

import os
import re
import time

from hotvcb import onhost_boot
from qemulab import MiB
from qemuvm import needs_qemu
from simhost import VOLUME, hotvcb, needs_root, write_conf
from fakelog import Log


# -- 7. a build dated ahead of the clock is not kept for ever ------------------------------------------------

def test_a_build_dated_ahead_of_a_stepped_back_clock_goes_a_week_after_it_was_first_seen(tmp_path):
    """A clock stepped back (NTP after a host booted with a wrong RTC) leaves an old build dated ahead of it:
    its age was negative, never over a week, so every such build stayed on ESXi's small /tmp for good."""
    cache = tmp_path / "cache"
    cache.mkdir()
    ahead = time.time() + 365 * 86400
    for name in ("hotvcb-old", "hotvcb-old.pyz"):
        (cache / name).mkdir() if "." not in name else (cache / name).write_bytes(b"x")
        os.utime(str(cache / name), (ahead, ahead))
    onhost_boot.forget_old_builds(str(cache), ())
    left = sorted(os.listdir(str(cache)))
    assert left == ["hotvcb-old", "hotvcb-old.pyz"], left  # seen now: its week starts now
    week_ago = time.time() - onhost_boot.KEEP_OLD_BUILDS - 60
    for name in left:
        assert os.path.getmtime(str(cache / name)) <= time.time() + 1, "still dated ahead"
        os.utime(str(cache / name), (week_ago, week_ago))  # a week on, unused
    onhost_boot.forget_old_builds(str(cache), ())
    assert os.listdir(str(cache)) == []


# -- 6. a QEMU overlay's age in status whatever the zones of its writer and reader -----------------------------

@needs_qemu
def test_status_tells_a_killed_runs_overlay_age_in_any_zone(tmp_path, monkeypatch):
    """The overlay's age came from the time its name says, read in the reader's zone: a backup run with
    TZ=UTC+10 (cron's zone on that box) killed after its snapshot, and `status` run by a monitoring agent
    with TZ=UTC, said the fresh overlay was dated 10 h ahead (or, the other way round, 10 h old)."""
    from qemulab import opened
    with opened(tmp_path, "k33") as lab:
        image = lab.image("k.raw", fmt="raw", size=4 * MiB)
        lab.start("kv", ["file=%s,format=raw,if=virtio" % image])
        monkeypatch.setenv("TZ", "Etc/GMT-10")  # UTC+10
        monkeypatch.setenv("HOTVCB_CRASH_AT", "snapshot-created")
        lab.hotvcb("--qemu", lab.inventory, "backup", "-m", "kv", "-g", lab.conf(), "-w", lab.workdir)
        monkeypatch.delenv("HOTVCB_CRASH_AT")
        monkeypatch.setenv("TZ", "UTC")
        try:
            code, out = lab.hotvcb("--qemu", lab.inventory, "status", "-g", lab.conf())
            line = next(l for l in out.splitlines() if "hotvcb-snapshot-" in l)
            assert "ahead" not in line and "10h" not in line and "9h" not in line, line
            assert re.search(r"\b[0-9]+s old\b|\b[0-9]m old\b", line), line
        finally:
            lab.hotvcb("--qemu", lab.inventory, "cleanup")


# -- 5. a QEMU .gz backup is judged by its first members, not decompressed whole ------------------------------

@needs_qemu
def test_a_qemu_gz_backup_is_judged_without_decompressing_its_disks(tmp_path, monkeypatch):
    """Its manifest carries `left_out`, so the check read on looking for a .vmx that a QEMU archive never holds:
    every rotation, status, list and restore --latest decompressed every .gz backup whole."""
    from hotvcb.localshell import LocalShell
    from hotvcb.store import health, layout
    from qemulab import opened
    with opened(tmp_path, "k33g") as lab:
        image = lab.image("g.raw", fmt="raw", size=8 * MiB)
        with open(image, "r+b") as f:
            f.write(os.urandom(6 * MiB))  # incompressible: the archive is ~6 MiB
        lab.start("gv", ["file=%s,format=raw,if=virtio" % image])
        code, out = lab.backup("gv", ENABLE_COMPRESSION=1)
        assert code == 0, out
    shell = LocalShell()
    (backup,) = layout.list_backups(shell, lab.volume, "gv")
    assert backup.path.endswith(".gz"), backup
    read = [0]
    opened_binary = LocalShell.open_binary

    def counted(self, path):
        stream = opened_binary(self, path)
        raw_read = stream.read

        def read_counted(*args):
            data = raw_read(*args)
            read[0] += len(data)
            return data
        stream.read = read_counted
        return stream
    monkeypatch.setattr(LocalShell, "open_binary", counted)
    verdict = health.judge(shell, backup)
    assert verdict.good, verdict
    assert 0 < read[0] < 1024 * 1024, "read %d bytes of a %d-byte archive" % (read[0], os.path.getsize(backup.path))


# -- 2. a failed backup of a newer hotvcb or of another host is not this run's to remove -----------------------

@needs_root
def test_rotation_leaves_failed_backups_of_a_newer_hotvcb_and_of_another_host_alone(host):
    """A shared folder (ghettoVCB's layout: one folder per VM name) holds a failed backup (STATUS.error) another
    host made of its own VM `web`, and one a newer hotvcb made: a failed backup was judged by its STATUS before
    its manifest was read, so this host's rotation counted both as its own and removed them."""
    import json
    import shutil
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT=1)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = os.path.join(host.real(VOLUME), "web")
    (made,) = [os.path.join(folder, n) for n in os.listdir(folder)]
    planted = {}
    for stamp, change in (("2026-01-01_01-00-00", {"source_host": "esxi-other", "vm_uuid": "42-other"}),
                          ("2026-01-02_01-00-00", {"version": 99})):
        copy = os.path.join(folder, "web-" + stamp)
        shutil.copytree(made, copy)
        os.rename(os.path.join(copy, "STATUS.ok"), os.path.join(copy, "STATUS.error"))
        with open(os.path.join(copy, "hotvcb.json")) as f:
            data = json.load(f)
        data.update(change, result="error")
        with open(os.path.join(copy, "hotvcb.json"), "w") as f:
            json.dump(data, f)
        planted[copy] = change
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    kept = [p for p in planted if os.path.isdir(p)]
    assert kept == sorted(planted), out
    assert "newer hotvcb" in out and "esxi-other" in out, out


# -- 4. rotation tidies the .gz records in the folders older writers named too --------------------------------

def test_rotation_tidies_gz_records_in_older_writers_folders(tmp_path):
    """Rotation lists, counts and removes a VM's backups in the folders older hotvcb (`a%b`) and ghettoVCB
    (`a%5cb`) named, but tidied the .gz records only in today's folder: a record an older hotvcb left beside
    its .gz (where ghettoVCB's rotation takes it for a backup) stayed there, and those of .gz backups gone
    stayed for ever."""
    from hotvcb.localshell import LocalShell
    from hotvcb.store import rotation
    volume = tmp_path / "vol"
    for vm, folder in (("a%b", "a%b"), ("a\\b", "a%5cb")):
        root = volume / folder
        (root / ".hotvcb-gz-records").mkdir(parents=True)
        gone = folder + "-2026-01-01_01-00-00.gz.verify.json"
        (root / gone).write_text("{}")  # beside a .gz gone without hotvcb's rotation
        (root / ".hotvcb-gz-records" / gone.replace("01-00-00", "02-00-00")).write_text("{}")
        rotation.rotate(LocalShell(), str(volume), vm, 3, Log())
        assert sorted(os.listdir(str(root))) == [".hotvcb-gz-records"], folder
        assert os.listdir(str(root / ".hotvcb-gz-records")) == [], folder


# -- 3. a .gz restore's room counts a sparse disk by the data it holds ----------------------------------------

@needs_root
def test_a_gz_restore_of_a_sparse_disk_that_fits_is_not_refused(host):
    """A thin 40 MiB disk holding little data, backed up compressed, restored onto a 16 MiB datastore: the room
    checks counted the archive's disk at its apparent size (twice: unpacked, then cloned), and refused a restore
    that fits, though the unpack writes no holes and the manifest says which blocks hold data."""
    host.create_vm("web", "datastore1", [{"size": "40M"}], power="off")
    (flat,) = [os.path.join(d, n) for d, _, names in os.walk(host.real("/vmfs/volumes/datastore1/"))
               for n in names if n == "web-flat.vmdk"]
    with open(flat, "r+b") as f:  # 2 MiB of data, the rest holes
        f.truncate(0)
        f.truncate(40 << 20)
        f.write(os.urandom(2 << 20))
    conf = write_conf(host, ENABLE_COMPRESSION=1)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    folder = os.path.join(host.real(VOLUME), "web")
    (gz,) = [n for n in os.listdir(folder) if n.endswith(".gz")]
    host.add_datastore("small", 16 << 20)
    args = ("restore", "%s/web/%s" % (VOLUME, gz), "--datastore", "small", "--name", "back")
    for dry in (["-d", "1"], []):
        r = hotvcb(host, *args, *dry)
        out = r.stdout + r.stderr
        assert r.returncode == 0, out
        assert "Traceback" not in out, out
    restored = os.path.join(host.real("/vmfs/volumes/small"), "back")
    assert any(n.endswith(".vmdk") for n in os.listdir(restored))


# -- 1. status names a killed backup's -partial folder and a killed restore's folder -------------------------

@needs_root
def test_status_names_a_killed_backups_partial_and_a_killed_restores_folder(host, tmp_path, monkeypatch):
    """After a crash the admin runs `status`: a killed backup's `-partial` folder and a killed restore's
    `<name>.hotvcb-restoring` (each up to a whole VM's size, neither a backup nor a VM) were named only by
    `hotvcb cleanup`; status said all was well. Each is a WARN naming the folder and what to do; a live
    restore's folder is not."""
    import json
    from qemuvm import kill_tree
    from simhost import hotvcb_background, wait_for
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "backup", "-m", "web", "-g", conf).returncode == 0
    monkeypatch.setenv("HOTVCB_CRASH_AT", "manifest-written")
    hotvcb(host, "backup", "-m", "web", "-g", conf)
    monkeypatch.delenv("HOTVCB_CRASH_AT")
    (partial,) = [n for n in os.listdir(os.path.join(host.real(VOLUME), "web")) if n.endswith("-partial")]
    (backup,) = [n for n in os.listdir(os.path.join(host.real(VOLUME), "web")) if n.startswith("web-")
                 and not n.endswith("-partial")]
    host.set_fault("clone.delay", "120")
    p = hotvcb_background(host, "restore", "%s/web/%s" % (VOLUME, backup), "--datastore", "datastore1", "--name",
                          "copy", "--format", "zeroedthick")
    restoring = os.path.join(host.real("/vmfs/volumes/datastore1"), "copy.hotvcb-restoring")
    try:
        wait_for(lambda: os.path.isdir(restoring), 60, "the clone")
        r = hotvcb(host, "status", "-g", conf, "--json")
        live = [c for c in json.loads(r.stdout)["checks"] if "hotvcb-restoring" in c["message"]]
        assert live == [], r.stdout
    finally:
        kill_tree(p.pid)
        p.communicate()
    host.clear_faults()
    r = hotvcb(host, "status", "-g", conf, "--json")
    checks = json.loads(r.stdout)["checks"]
    left = [c for c in checks if c["kind"] == "leftover"]
    assert any(partial in c["message"] for c in left), r.stdout
    assert any("copy.hotvcb-restoring" in c["message"] for c in left), r.stdout
    for c in left:
        assert c["severity"] == "WARN" and "hotvcb cleanup" in c["message"], c
    assert hotvcb(host, "cleanup", "-g", conf).returncode == 0
    r = hotvcb(host, "status", "-g", conf, "--json")
    assert not [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "leftover"], r.stdout
