"""Outside tester, s38 (compat): what the s38 changes promise, attacked from outside.

I did not write hotvcb. s38 made `Shell.list_files` of a folder it cannot list a HostError for every Shell (LocalShell
used to say []), moved SSH mode's "going file by file" note inside the run's log frame, and had a restore whose
config does not read say so in its -l file. I built tiny sealed bare-QEMU backups as folders (a 1 MiB qcow2, the VM's
description, the manifest, STATUS.ok) and ran list, verify VM, restore --latest --kvm, and a simulated host's backup
(its rotation) with another process acting at one precise moment: the backup folder renamed to `-deleting` (another
run's rotation), removed (`rm -rf`), or replaced by a file or a dangling symlink. The moment is a gate: a small driver
runs hotvcb's CLI (`hotvcb.cli.main`) in a process whose LocalShell does the change the first time the command
touches that folder (by a given call), as the other process would have done then; every outcome is read from the
CLI's own output and exit code. Also: garbage configs for restore and restore --kvm (binary, a folder, a dangling
link, a bad value, a bad per-VM file) and their -l file; SSH mode against a host without python (a real sshd) for
a backup stopped before its frame, cleanup, status/verify --json; and esxisim's `enter` build marker.

Worked (some pinned below): verify VM / --all saying "REMOVED meanwhile" for a backup removed as it is read; status
(answered from its scan); restore --latest taking the older backup when the newest goes (renamed, removed, a dangling
link); cleanup while its leftover is removed; rotation meeting a file or link in place of the folder it removes;
garbage configs (binary, BOM, CRLF, unknown key, bad value, folder, dangling link, missing) for restore and --kvm.

Defects:

- DEFECT 1: `restore --latest VM --kvm DIR` while another run's rotation renames the newest backup to `-deleting`
  warns it "skipped the newer backup ..., which is damaged: manifest unreadable: cannot list ...": the backup was
  neither damaged nor its manifest unreadable (it was read); it was being removed.
- DEFECT 2: `list` while another run's rotation renames a KVM (qcow2) backup away after list read the volume shows it
  "damaged", and its VERIFIED column "FAILED: cannot read .../vda.qcow2": no verify ever ran or failed.
- DEFECT 3: a backup whose rotation finds the backup it was about to remove already renamed to `-deleting` by
  another run (or removed by an admin's `rm -rf`) ends "ERROR: All VMs failed!", exit 6, its own backup made and
  good.
- DEFECT 4: `restore --latest VM --kvm DIR` whose chosen backup is rotated away while its checksums are read stops
  with "... fails verification: vda.qcow2: unreadable": the backup was fine, it was removed.
- DEFECT 5: `verify --all` while one VM's whole backup folder is removed as verify lists it: one error line, exit 1,
  no other VM's backup verified, nothing on stdout for `--json`.
- DEFECT 6: DEFECT 2 for ESXi's compressed backups, and in status too: a `.gz` removed right after `status` read
  the volume makes the monitoring's status "WARN ... last backup damaged", exit 1; `list` shows it "damaged (gz)",
  VERIFIED "FAILED".
- DEFECT 7: `restore --kvm -l LOG` writes no `hotvcb restore LOG START/END` banners; every other restore does.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from sealedbuild import sealed
from simhost import REPO, VOLUME, hotvcb as host_hotvcb, needs_root, on_host, write_conf
from sshd import needs_sshd
from sshsite import replace_host_python, site  # noqa: F401  (the fixture)

VM = "web"
TIMEOUT = 60

# A process running hotvcb's CLI whose LocalShell does what another process would do, at one moment: the first
# time the command calls HOOK_CALL on HOOK_PATH (or, for "scan", right after it scanned a folder above it).
DRIVER = r'''
import os, shutil, sys
from hotvcb import localshell
call, path, action = os.environ["HOOK_CALL"], os.environ["HOOK_PATH"], os.environ["HOOK_ACTION"]
done = []

def act():
    done.append(1)
    sys.stderr.write("[gate: %s %s at %s]\n" % (action, path, call))
    if action == "deleting":  # another run's rotation: out of the good namespace in one rename
        os.rename(path, (path[:-3] if path.endswith(".gz") else path) + "-deleting")
    elif action == "rm":
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    elif action == "file":
        shutil.rmtree(path)
        open(path, "w").write("x")
    elif action == "dangling":
        shutil.rmtree(path)
        os.symlink("/nonexistent/" + os.path.basename(path), path)

orig = getattr(localshell.LocalShell, call)

def hooked(self, where, *a, **k):
    p = os.path.normpath(str(where))
    if done:
        return orig(self, where, *a, **k)
    if call == "scan" and path.startswith(p + "/"):
        out = orig(self, where, *a, **k)
        act()
        return out
    if call != "scan" and (p == path or p.startswith(path + "/")):
        act()
    return orig(self, where, *a, **k)

setattr(localshell.LocalShell, call, hooked)
from hotvcb.cli import main
sys.exit(main(sys.argv[1:]))
'''


def stamp(days_ago: float) -> str:
    return (datetime.now() - timedelta(days=days_ago)).strftime("%Y-%m-%d_%H-%M-%S")


@pytest.fixture
def three(tmp_path):
    """Three good backups of `web` (3, 2 and 1 days old) and a config naming their volume: (conf, [folders])."""
    folders = [sealed(tmp_path / "vol", stamp(d), restorable=True) for d in (3, 2, 1)]
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    return str(conf), folders


def raced(call, path, action, *args):
    """hotvcb `args` run while another process does `action` to `path` the first time the command calls `call`
    on it (see DRIVER)."""
    env = dict(os.environ, PYTHONPATH=REPO, HOOK_CALL=call, HOOK_PATH=str(path), HOOK_ACTION=action)
    try:
        r = subprocess.run([sys.executable, "-c", DRIVER] + [str(a) for a in args], capture_output=True, text=True,
                           timeout=TIMEOUT, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail("hotvcb %s still running after %d s" % (" ".join(map(str, args)), TIMEOUT))
    r.out = r.stdout + r.stderr
    return r


def raced_on_host(host, call, path, action, *args):
    """raced, for hotvcb run on the simulated host (its /bin/python, in its namespace)."""
    argv = on_host(host, "env", "PYTHONPATH=" + REPO, "HOOK_CALL=" + call, "HOOK_PATH=" + path,
                   "HOOK_ACTION=" + action, "/bin/python", "-c", DRIVER, *args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO))
    r.out = r.stdout + r.stderr
    return r


def local(*args):
    r = subprocess.run([sys.executable, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                       timeout=TIMEOUT, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    r.out = r.stdout + r.stderr
    return r


# -- 1. backups removed, renamed or replaced while they are judged --------------------------------------------------

def test_restore_latest_does_not_call_a_backup_being_rotated_away_damaged(three, tmp_path):
    """The admin runs `hotvcb restore --latest web --kvm DIR` while the nightly backup's rotation (another run)
    renames the newest backup to `-deleting`, just as the restore looks at its files. The restore warns "skipped the
    newer backup ..., which is damaged: manifest unreadable: cannot list ...: No such file or directory" and takes
    the older one. Taking the older one is right; the warning is not: the backup was not damaged and its manifest
    was read fine; it went away (verify of the same moment says "REMOVED meanwhile: not checked (rotated away by a
    running backup?)"). An admin reading "damaged" goes looking for a storage fault. shell.py's contract says a
    folder that cannot be listed is a HostError so that "a backup removed while it is judged" is not read as one
    holding nothing; store/health.py:_judge_contents turns that HostError into "damaged: manifest unreadable" (so
    does verify of a backup folder replaced by a file meanwhile: "DAMAGED: manifest unreadable: cannot list ...: Not a
    directory")."""
    conf, folders = three
    (tmp_path / "out").mkdir()
    r = raced("list_files", folders[-1], "deleting", "restore", "-d", "1", "-g", conf, "--latest", VM,
              "--kvm", tmp_path / "out")
    assert "Traceback" not in r.out, r.out
    assert "taking %s" % folders[1] in r.out, r.out  # the older good one is restored all the same
    assert "damaged" not in r.out and "manifest unreadable" not in r.out, r.out


def test_list_does_not_call_a_backup_rotated_away_meanwhile_damaged_or_failed_verify(three):
    """The admin runs `hotvcb list` while another run's rotation renames a KVM backup to `-deleting` right after
    list read the volume. list shows it as "damaged" with VERIFIED "FAILED: cannot read .../vda.qcow2: No such file
    or directory" (--json: verify_error set): a verify failure that never happened, on a backup that was fine and is
    being removed. list's doc: "damaged (a file missing, or verify found damage)", "deleting (being removed by
    rotation)". It should show it as deleting, or not at all; never a failed verify. The qcow2 header read for its
    base backups (store/health.py:_judge_bases, chain.bases) calls any HostError damage."""
    conf, folders = three
    r = raced("scan", folders[1], "deleting", "list", "--json", "-g", conf)
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    rows = {b["name"]: b for b in json.loads(r.stdout)["backups"]}
    assert rows[os.path.basename(folders[0])]["good"] and rows[os.path.basename(folders[2])]["good"], rows
    row = rows.get(os.path.basename(folders[1]))
    assert row is None or (row["status"] != "damaged" and not row["verify_error"]), row


def test_a_restore_whose_backup_is_rotated_away_while_read_does_not_call_it_failed_verification(three, tmp_path):
    """`restore --latest web --kvm DIR` picks the newest backup, and while its checksums are read another run's
    rotation renames it to `-deleting`. The restore stops (right: its source is gone) saying "ERROR: ... fails
    verification: vda.qcow2: unreadable: cannot read ...: No such file or directory", exit 6: to the admin, the newest
    backup is corrupt. It was fine and was removed; `verify` of the same moment says "REMOVED meanwhile: not checked
    (rotated away by a running backup?)". The restore should say the backup went away while it was read (or, with
    --latest, take the next good one), never that it failed verification. The same on ESXi (`restore --latest
    --datastore`: "fails verification, not restoring it")."""
    conf, folders = three
    (tmp_path / "out").mkdir()
    r = raced("block_digests", folders[-1], "deleting", "restore", "-d", "1", "-g", conf, "--latest", VM,
              "--kvm", tmp_path / "out")
    assert "[gate: " in r.out and "Traceback" not in r.out, r.out
    assert "fails verification" not in r.out, r.out


def test_verify_all_goes_on_with_the_other_vms_when_one_vms_folder_is_removed(tmp_path):
    """Backups of app, web and zed. The nightly `verify --all` runs while the admin removes web's whole folder (a
    VM decommissioned: `rm -rf /backup/web`) just as verify lists it. verify stops with the one line "hotvcb: error:
    cannot list .../web: No such file or directory", exit 1: app's and zed's backups, which are fine, are not
    verified, and `--json` prints nothing for monitoring to read. A moment later (web's folder removed once its
    backups were listed) the same verify checks app and zed and says web "NOT CHECKED: its VM's folder ... went away
    while verify ran". The same should happen here: app and zed verified, web said to be gone. layout._backups_in's
    listdir HostError is not caught per VM (commands/verify_cmd.py)."""
    for vm in ("app", VM, "zed"):
        sealed(tmp_path / "vol", stamp(1), vm, restorable=True)
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "vol"))
    r = raced("listdir", tmp_path / "vol" / VM, "rm", "verify", "--all", "--json", "-g", conf)
    assert "[gate: " in r.out and "Traceback" not in r.out, r.out
    checked = {os.path.basename(x["path"]).split("-")[0]: x["status"] for x in json.loads(r.stdout)["results"]}
    assert checked.get("app") == "ok" and checked.get("zed") == "ok", r.out


@pytest.mark.parametrize("action", ["deleting", "rm"])
def test_verify_vm_skips_a_backup_removed_while_it_is_verified(three, action):
    """`verify web` while another run removes one of its backups as verify reaches it: "REMOVED meanwhile", not
    checked and not counted, the others verified, exit 0."""
    conf, folders = three
    r = raced("list_files", folders[1], action, "verify", "-g", conf, VM)
    assert r.returncode == 0, r.out
    assert "REMOVED meanwhile" in r.out and "2 backup(s) checked, 0 damaged" in r.out, r.out


@pytest.mark.parametrize("action", ["deleting", "rm", "dangling"])
def test_restore_latest_takes_the_older_backup_when_the_newest_goes(three, tmp_path, action):
    """`restore --latest web --kvm DIR -d 1` (a dry run) while the newest backup goes away as it is judged: the
    older good one is taken, said, and the dry run passes (exit 0); no traceback."""
    conf, folders = three
    (tmp_path / "out").mkdir()
    r = raced("exists", folders[-1], action, "restore", "-d", "1", "-g", conf, "--latest", VM,
              "--kvm", tmp_path / "out")
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    assert "taking %s" % folders[1] in r.out, r.out


@needs_root
@pytest.mark.parametrize("action", ["deleting", "rm"])
def test_a_backup_whose_rotation_meets_another_removal_is_still_ok(host, action):
    """Two backups of `web` kept, VM_BACKUP_ROTATION_COUNT=2: the admin's third backup is made and sealed, and its
    rotation is about to remove the oldest when another run's rotation (a second host on the shared volume) renames
    it to `-deleting`, or an admin's `rm -rf` removes it, first. The run logs "web: cannot rename ... File exists"
    (or "No such file or directory"), "Final status: ERROR: All VMs failed!", exit 6, though its backup is made and
    good. docs/architecture.md: "Once published the backup is sealed ... (during rotation, RSYNC_LINK, a post hook)
    ... the VM is still reported OK with its backup good"; the backup that rotation wanted gone is gone. The run
    should end OK (exit 0), as when nobody else got there first. store/rotation.py:condemn's rename is not told
    apart from a removal someone else already did."""
    host.create_vm(VM, "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_ROTATION_COUNT="2")
    r = host_hotvcb(host, "backup", "-m", VM, "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    vroot = host.real(VOLUME + "/" + VM)
    (first,) = os.listdir(vroot)
    older = ["%s-%s" % (VM, stamp(days)) for days in (3, 2)]
    for name in older:  # two older backups: copies of the one made, named days back
        shutil.copytree(os.path.join(vroot, first), os.path.join(vroot, name))
    shutil.rmtree(os.path.join(vroot, first))
    oldest = "%s/%s/%s" % (VOLUME, VM, older[0])
    r = raced_on_host(host, "rename", oldest, action, "backup", "-m", VM, "-g", conf)
    assert "[gate: " in r.out, r.out  # the other run did get there first
    new = [n for n in os.listdir(vroot) if n.startswith(VM + "-") and n > "%s-%s" % (VM, stamp(0.5))]
    assert len(new) == 1, os.listdir(vroot)
    rows = {b["name"]: b for b in json.loads(host_hotvcb(host, "list", "--json", "-g", conf).stdout)["backups"]}
    assert rows[new[0]]["good"], rows  # the backup made is good...
    assert r.returncode == 0 and "All VMs backed up OK" in r.out, r.out  # ...and the run says so


@needs_root
@pytest.mark.parametrize("command", ["status", "list"])
def test_a_compressed_backup_removed_while_status_or_list_runs_is_not_called_damaged(host, command):
    """ENABLE_COMPRESSION=1, two good `.gz` backups of web. The admin removes the newest by hand (`rm web-...gz`: he
    wants the VM's state of before) while the monitoring's `hotvcb status` runs, right after status read the volume.
    status says "WARN backup web: last backup damaged (cannot open ...gz: ... No such file or directory)", exit 1;
    `list` of the same moment "damaged (gz)" with VERIFIED "FAILED: cannot open ...": no backup was damaged and no
    verify failed. status/list should answer from what is there (the backup gone: not shown, or as before the
    removal), as they do for a folder backup removed at the same moment (store/health.py:_judge_archive reads the
    archive live after the scan and takes its absence for damage)."""
    host.create_vm(VM, "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, ENABLE_COMPRESSION="1")
    r = host_hotvcb(host, "backup", "-m", VM, "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    vroot = host.real(VOLUME + "/" + VM)
    (made,) = [n for n in os.listdir(vroot) if n.endswith(".gz")]
    names = ["%s-%s.gz" % (VM, stamp(hours / 24.0)) for hours in (8, 4)]
    for name in names:
        shutil.copy2(os.path.join(vroot, made), os.path.join(vroot, name))
    os.unlink(os.path.join(vroot, made))
    args = ["status", "-g", conf] if command == "status" else ["list", "-g", conf]
    r = raced_on_host(host, "scan", "%s/%s/%s" % (VOLUME, VM, names[1]), "rm", *args)
    assert "[gate: " in r.out and "Traceback" not in r.out, r.out
    assert "damaged" not in r.stdout and "FAILED" not in r.stdout, r.out
    if command == "status":
        assert r.returncode == 0, r.out


# -- 2. SSH mode's fallback to file by file, said where the admin reads it ------------------------------------------

def no_python(host):
    replace_host_python(host, lambda path: os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0)))  # a whiteout


NOTE = "going file by file"


@needs_root
@needs_sshd
def test_a_backup_stopped_before_its_frame_says_why_it_went_file_by_file(host, site, tmp_path):  # noqa: F811
    """SSH mode, a host without python, and a config whose DISK_BACKUP_FORMAT the host cannot write (qcow2 on
    ESXi): the run stops before its log frame. The -l file holds the note (once), the error naming the format, and
    a final status; exit 1; no traceback."""
    no_python(host)
    host.create_vm(VM, "datastore1", [{"size": "1M"}], power="on")
    log = tmp_path / "backup.log"
    r, _trips = site.run("backup", "-m", VM, "-g", write_conf(host, DISK_BACKUP_FORMAT="qcow2"),
                         "-w", tmp_path / "work", "-l", log)
    assert r.returncode == 1 and "Traceback" not in r.out, r.out
    text = log.read_text()
    assert text.count(NOTE) == 1 and "qcow2" in text and "Final status: ERROR" in text, text
    assert text.index(NOTE) < text.index("Final status"), text


@needs_root
@needs_sshd
def test_cleanup_says_at_once_why_it_goes_file_by_file(host, site, tmp_path):  # noqa: F811
    """`cleanup -l LOG` in SSH mode against a host without python: the note is in the -l file once, before what
    cleanup found, and the cleanup ends 0 with nothing to do."""
    no_python(host)
    log = tmp_path / "cleanup.log"
    r, _trips = site.run("cleanup", "-g", write_conf(host), "-w", tmp_path / "work", "-l", log)
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    text = log.read_text()
    assert text.count(NOTE) == 1, text
    assert r.out.count(NOTE) == 1, r.out


@needs_root
@needs_sshd
def test_status_and_verify_json_stay_json_when_they_go_file_by_file(host, site):  # noqa: F811
    """`status --json` / `verify --all --json` in SSH mode against a host without python: the note goes to stderr,
    stdout stays one JSON document a monitoring script parses."""
    no_python(host)
    os.makedirs(host.real(VOLUME + "/" + VM))
    conf = write_conf(host)
    for args in (["status", "--json"], ["verify", "--all", "--json"]):
        r, _trips = site.run(*args, "-g", conf)
        assert r.returncode in (0, 1, 2) and "Traceback" not in r.out, r.out
        assert NOTE in r.stderr and NOTE not in r.stdout, r.out
        json.loads(r.stdout)


# -- 3. a restore whose config does not read ----------------------------------------------------------------------

@pytest.mark.parametrize("kind, kvm", [("binary", False), ("folder", True), ("dangling", False), ("bad value", True),
                                       ("bad per-VM file", False), ("bad per-VM file", True)])
def test_a_restore_whose_config_does_not_read_names_it_in_stderr_and_its_log_file(three, tmp_path, kind, kvm):
    """restore (to a datastore, or --kvm) with -g a garbage config: exit 1, one line on stderr naming the file
    (and line), the same error and a final status in the -l file, no traceback."""
    conf, folders = three
    bad = tmp_path / "bad.conf"
    extra = []
    if kind == "binary":
        bad.write_bytes(b"\xff\xfe\x00\x01garbage\x00\n")
    elif kind == "folder":
        bad.mkdir()
    elif kind == "dangling":
        os.symlink(str(tmp_path / "nas" / "gone.conf"), str(bad))
    elif kind == "bad value":
        bad.write_text("VM_BACKUP_VOLUME=%s\nVM_BACKUP_ROTATION_COUNT=abc\n" % (tmp_path / "vol"))
    else:
        shutil.copy(conf, str(bad))
        (tmp_path / "vmc").mkdir()
        bad = tmp_path / "vmc" / VM
        bad.write_text("DISK_BACKUP_FORMAT=zzz\n")
        extra = ["--vm-configs", tmp_path / "vmc"]
    log = tmp_path / "restore.log"
    where = ["--kvm", tmp_path] if kvm else ["--datastore", "datastore1"]
    r = local("restore", "-g", tmp_path / "bad.conf", "--latest", VM, *extra, *where, "-l", log)
    assert r.returncode == 1 and "Traceback" not in r.out, r.out
    (line,) = r.stderr.strip().splitlines()
    assert str(bad) in line and line.startswith("hotvcb: error:"), r.out
    text = log.read_text()
    assert str(bad) in text and "Final status: ERROR" in text, text


def test_a_kvm_restores_log_is_framed_as_every_restores(three, tmp_path):
    """The admin's job runs `restore --latest web --kvm DIR -l LOG` (the ESXi host gone, the NAS and a Linux box
    left). Its -l file holds the run's lines and its final status, but no `hotvcb restore LOG START` / `LOG END`
    banners, which a restore to a datastore and a repository's `restore --to DIR` write ("its log framed as every
    restore's", restore_cmd._restore_files). docs/migrating-from-ghettovcb.md: "Every line of a run is between its
    banners"; a log reader that takes a run without its END banner for one that died cannot tell a KVM restore
    that finished from one killed halfway."""
    conf, _folders = three
    (tmp_path / "out").mkdir()
    log = tmp_path / "restore.log"
    r = local("restore", "-d", "1", "-g", conf, "--latest", VM, "--kvm", tmp_path / "out", "-l", log)
    assert r.returncode == 0, r.out
    lines = log.read_text().splitlines()
    assert "restore LOG START" in lines[0] and "restore LOG END" in lines[-1], lines


# -- 4. esxisim's C enter helper: a marker left by the code before s38 -------------------------------------------

def test_an_empty_failure_marker_of_before_s38_is_retried_once_cc_is_there(tmp_path, monkeypatch):
    """A checkout upgraded past s38 keeps the `_build/enter-*.failed` marker the older code left, empty (it named
    no compiler). With cc on PATH the helper is built again, not passed over for ever."""
    from esxisim import enter
    from test_fix_s38compat import enter_in
    _cc, exe = enter_in(tmp_path, monkeypatch)
    exe.parent.mkdir()
    (tmp_path / "_build" / (exe.name + ".failed")).write_text("")  # the old code's marker
    built = enter._build()
    assert built is not None and os.access(built, os.X_OK), os.listdir(str(exe.parent))
    assert not (tmp_path / "_build" / (exe.name + ".failed")).exists()
