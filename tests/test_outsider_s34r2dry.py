"""Outsider round s34 r2 (dry runs and what just changed): `backup -d dryrun` against a repository it now opens
read-only, `restore -d 1` against a target the real run refuses, `restore -g CONF <id>` from the repository the
config names, and power-down before backup (VMs without VMware Tools, refused hard power-offs).
README (Exit codes): "a dry run that finds what the real run would fail on ... exits the code that run would".
Each defect is a strict xfail asserting the right behaviour; the rest pin what works.

Tiny disks (1-2 MiB); one simulated host per test.
"""

import json
import os
import re
import subprocess

import pytest

from simhost import (backup_dirs, hotvcb, hotvcb_background, needs_root, on_host, power, snapshot_names, wrap_tool,
                     write_conf)

ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")


def _out(r):
    return r.stdout + r.stderr


def _final(r):
    lines = re.findall(r"###### Final status: (.*) ######", r.stdout)
    return lines[-1] if lines else ""


def _tree(path):
    out = {}
    for d, ds, fs in os.walk(path):
        for n in ds + fs:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _repo_backup(host, tmp_path, repo="/vmfs/volumes/backup/repo", size="2M"):
    """VM web backed up once into `repo` named by a conf: (conf, the backup's id)."""
    host.create_vm("web", "datastore1", [{"size": size}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, _out(r)
    r = hotvcb(host, "list", "-g", conf)
    [sid] = ID.findall(r.stdout)
    return conf, sid


# -- backup -d dryrun against a repository path the real run cannot open ----------------------------------------------

@needs_root
@pytest.mark.parametrize("what", ["file", "dangling-symlink"])
def test_a_dry_run_into_a_repository_path_that_is_no_folder_exits_as_the_real_run(host, tmp_path, what):
    """The admin typed VM_BACKUP_REPOSITORY=/vmfs/volumes/backup/repo where `repo` is a file left by a copy
    (or a symlink to an NFS path that is gone). `hotvcb backup -d dryrun` says "OK, only a dryrun", exit 0;
    the real run that night fails the VM: "cannot write to the repository ...: tmp/: Not a directory" (or
    "No such file or directory"), exit 6. The dry run should fail the VM the same way, naming the repository."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    repo = "/vmfs/volumes/backup/repo"
    if what == "file":
        with open(host.real(repo), "w") as f:
            f.write("not a repository\n")
    else:
        os.symlink("/vmfs/volumes/gone-nfs/repo", host.real(repo))
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repo)
    before = _tree(host.real("/vmfs/volumes/backup"))
    dry = hotvcb(host, "backup", "-m", "web", "-g", conf, "-d", "dryrun", "-w", tmp_path / "work")
    assert "Traceback" not in _out(dry)
    assert _tree(host.real("/vmfs/volumes/backup")) == before  # the dry run wrote nothing (passes today)
    real = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert real.returncode == 6, _out(real)
    assert dry.returncode == real.returncode, (dry.returncode, _final(dry))
    assert "OK, only a dryrun" not in _final(dry)


@needs_root
def test_a_dry_run_into_an_existing_repository_writes_nothing_there(host, tmp_path):
    """Control: the dry run of a good job opens the repository read-only and leaves its tree as it was."""
    conf, _sid = _repo_backup(host, tmp_path)
    real = host.real("/vmfs/volumes/backup/repo")
    before = _tree(real)
    dry = hotvcb(host, "backup", "-m", "web", "-g", conf, "-d", "dryrun", "-w", tmp_path / "work")
    assert dry.returncode == 0 and _final(dry) == "OK, only a dryrun.", _out(dry)
    assert _tree(real) == before


# -- restore -d 1 from a repository into a target a killed restore left its folder in --------------------------------

@needs_root
def test_a_dry_run_restore_to_dir_with_a_leftover_restoring_folder_exits_as_the_real_run(host, tmp_path):
    """A restore to /vmfs/volumes/backup/out/web from another machine died and left `web.hotvcb-restoring`
    (no record here proves it dead). The admin dry-runs the restore: "every check passed, nothing written",
    exit 0. The real run then refuses: "web.hotvcb-restoring exists: another restore ... is running", exit 1.
    The folder KVM restore's dry run already foresees this (it exits as the real run); this one should too."""
    _conf, sid = _repo_backup(host, tmp_path)
    os.makedirs(host.real("/vmfs/volumes/backup/out/web.hotvcb-restoring"))
    args = ("restore", "--repo", "/vmfs/volumes/backup/repo", sid, "--to", "/vmfs/volumes/backup/out/web")
    dry = hotvcb(host, *args, "-d", "1")
    real = hotvcb(host, *args)
    assert real.returncode != 0, _out(real)
    assert dry.returncode == real.returncode, _out(dry)


@needs_root
def test_a_dry_run_kvm_restore_from_the_repository_with_a_leftover_restoring_folder_exits_as_the_real_run(host, tmp_path):
    """The admin restores a repository backup to KVM: `restore -g CONF <id> --kvm /srv/vms -d 1` says
    "every check passed", exit 0; the real run stages the backup, then fails: "/srv/vms/web.hotvcb-restoring
    exists: another restore into it is running ...", exit 6. A folder backup's --kvm dry run already says so
    (exit 6); the repository's should exit as its real run does."""
    conf, sid = _repo_backup(host, tmp_path)
    target = tmp_path / "kvm"
    (target / "web.hotvcb-restoring").mkdir(parents=True)
    dry = hotvcb(host, "restore", "-g", conf, sid, "--kvm", target, "-d", "1")
    real = hotvcb(host, "restore", "-g", conf, sid, "--kvm", target)
    assert real.returncode == 6, _out(real)
    assert dry.returncode == real.returncode, _out(dry)


@needs_root
def test_a_folder_backups_kvm_dry_run_sees_the_leftover_restoring_folder(host, tmp_path):
    """Control for the test above: the folder backup's --kvm dry run exits as its real run."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
    folder = backup_dirs(host, "web")[-1]
    target = tmp_path / "kvm"
    (target / "web.hotvcb-restoring").mkdir(parents=True)
    dry = hotvcb(host, "restore", folder, "--kvm", target, "-d", "1")
    real = hotvcb(host, "restore", folder, "--kvm", target)
    assert real.returncode == 6 and dry.returncode == 6, (_out(dry), _out(real))


# -- power-down before backup -------------------------------------------------------------------------------------------

@needs_root
def test_shutdown_order_reports_why_a_vm_without_tools_was_not_backed_up(host, tmp_path):
    """POWER_VM_DOWN_BEFORE_BACKUP=1, VM_SHUTDOWN_ORDER=app,legacy, no hard power off. `legacy` has no VMware
    Tools: the host refuses `power.shutdown` at once. Without a shutdown order the mail/JSON reason says so
    (VMware Tools not running); with the order the log says it once, but the report's reason (what the
    monitoring reads) is only 'did not shut down for VM_SHUTDOWN_ORDER; not backed up' - the admin looks for a
    slow guest. The reason should say the host refused the shutdown (VMware Tools not running)."""
    host.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    legacy = host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s",
                      VM_SHUTDOWN_ORDER="app,legacy", VM_STARTUP_ORDER="legacy,app")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-a", "-g", conf, "--json-report", report)
    assert r.returncode == 4, _out(r)
    assert power(host, legacy) == "Powered on"
    rows = {v["vm"]: v for v in json.loads(report.read_text())["vms"]}
    assert rows["app"]["result"] == "ok"
    assert "tools" in rows["legacy"]["message"].lower(), rows["legacy"]


@needs_root
def test_without_shutdown_order_a_vm_without_tools_is_reported_for_what_it_is(host, tmp_path):
    """Control for the test above: without VM_SHUTDOWN_ORDER the reason names VMware Tools."""
    host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "legacy", "-g", conf, "--json-report", report)
    assert r.returncode == 6, _out(r)
    [row] = json.loads(report.read_text())["vms"]
    assert "tools" in row["message"].lower(), row


@needs_root
def test_cleanup_leaves_off_a_vm_whose_shutdown_and_hard_power_off_were_both_refused(host, tmp_path):
    """ENABLE_HARD_POWER_OFF=1; `legacy` has no VMware Tools and the host refuses its power off ('Power off
    failed'). The run logs 'guest shutdown refused', 'hard power off failed', then 'b is still powered on; its
    guest was asked to shut down and may still go off: the next run (or `hotvcb cleanup`) powers it on again'
    - nothing asked the guest anything. In the morning the admin powers `legacy` off by hand to install Tools
    and runs `hotvcb cleanup` for the failed night: cleanup says 'run ... powered it off for a backup and did
    not finish; powering it on' and boots it. As for a refused shutdown without hard power off (the marker is
    removed), a VM no request of the run could still take down must be left as the admin puts it."""
    legacy = host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    host.set_fault("power.off", "refuse")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s",
                      ENABLE_HARD_POWER_OFF=1)
    r = hotvcb(host, "-m", "legacy", "-g", conf)
    assert r.returncode == 6, _out(r)
    host.set_fault("power.off", "")
    host.power_off(legacy)
    c = hotvcb(host, "cleanup", "-g", conf)
    assert power(host, legacy) == "Powered off", _out(c)
    assert "may still go off" not in r.stdout, r.stdout[-2000:]


# -- restore --kvm from the repository: a name the real run refuses ---------------------------------------------------

@needs_root
@pytest.mark.parametrize("name", ["a/b", "../evil"])
def test_a_repository_kvm_dry_run_refuses_a_name_the_real_run_refuses(host, tmp_path, name):
    """The admin dry-runs the KVM restore of a repository backup with `--name "$SITE/web"` (a variable that held
    a slash): "every check passed, nothing changed", exit 0. The real run: "'a/b' cannot be the restored VM's
    name: it holds '/'", exit 6. A folder backup's --kvm dry run refuses it (the name is checked first)."""
    conf, sid = _repo_backup(host, tmp_path)
    target = tmp_path / "kvm"
    target.mkdir()
    dry = hotvcb(host, "restore", "-g", conf, sid, "--kvm", target, "--name", name, "-d", "1")
    real = hotvcb(host, "restore", "-g", conf, sid, "--kvm", target, "--name", name)
    assert real.returncode == 6, _out(real)
    assert dry.returncode == real.returncode, _out(dry)


# -- the advice a refused restore gives ----------------------------------------------------------------------------------

@needs_root
def test_the_cleanup_a_refused_restore_names_says_why_the_folder_was_left(host, tmp_path):
    """A restore to /vmfs/volumes/backup/out/web is refused: "web.hotvcb-restoring exists: another restore ... is
    running, or one that was killed left it and its death cannot be proven here (`hotvcb cleanup --kvm
    /vmfs/volumes/backup` says why; remove it by hand if no restore is running)". The admin runs exactly that:
    "cleanup: 0 leftover(s) found" - not a word of the folder (nor with the folder's own parent). The command
    the message names must say why that folder is left (or the message must not promise it)."""
    _conf, sid = _repo_backup(host, tmp_path)
    os.makedirs(host.real("/vmfs/volumes/backup/out/web.hotvcb-restoring"))
    r = hotvcb(host, "restore", "--repo", "/vmfs/volumes/backup/repo", sid, "--to", "/vmfs/volumes/backup/out/web")
    assert r.returncode != 0
    m = re.search(r"`hotvcb cleanup --kvm ([^`]+)` says why", _out(r))
    assert m, _out(r)
    c = hotvcb(host, "cleanup", "--kvm", m.group(1), "-d", "dryrun")
    assert c.returncode == 0, _out(c)
    assert "web.hotvcb-restoring" in _out(c), _out(c)


# -- list -c where the run's config names a repository and a per-VM file sends a VM to folders -----------------------

@needs_root
def test_list_with_per_vm_files_names_the_folder_backups_of_a_vm_sent_out_of_the_repository(host, tmp_path):
    """ghettoVCB.conf sets VM_BACKUP_REPOSITORY; the per-VM file `db` sets VM_BACKUP_REPOSITORY="" and
    VM_BACKUP_VOLUME=/vmfs/volumes/ds5/db-only (db's backups go to folders). `hotvcb -a -g conf -c dir` backs
    up both. `hotvcb list -g conf -c dir` lists web's repository backup only, and not a word of db: db reads as
    never backed up (`list ... db` and `status -c` do show it). As list names a VM a per-VM file sends into a
    repository, it should list (or at least name) db's folder backups."""
    for vm in ("web", "db"):
        host.create_vm(vm, "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text('VM_BACKUP_REPOSITORY=""\nVM_BACKUP_VOLUME=/vmfs/volumes/ds5/db-only\n')
    r = hotvcb(host, "-a", "-g", conf, "-c", confdir, "-w", tmp_path / "work")
    assert r.returncode == 0, _out(r)
    one = hotvcb(host, "list", "-g", conf, "-c", confdir, "db")
    assert one.returncode == 0 and "db " in one.stdout, _out(one)  # passes today
    r = hotvcb(host, "list", "-g", conf, "-c", confdir)
    assert r.returncode == 0, _out(r)
    assert "web " in r.stdout
    assert "db" in _out(r), _out(r)


@needs_root
def test_a_vm_that_came_back_on_during_its_backup_is_not_powered_on_later_by_cleanup(host, tmp_path):
    """POWER_VM_DOWN_BEFORE_BACKUP=1. The run shuts `a` down ('a is powered off'); as its copy starts, HA (or a
    colleague) powers `a` on again; the copy fails on the locked disk. The run ends saying 'a is still powered
    on; its guest was asked to shut down and may still go off: the next run (or `hotvcb cleanup`) powers it on
    again if it does' - it did go off, and came back on. Next morning the admin shuts `a` down for
    maintenance and runs `hotvcb cleanup` for the failed night: cleanup says the run 'powered it off for a
    backup and did not finish; powering it on' and boots it in the middle of the maintenance. A VM seen off and
    then found on again was not left off by the run: nothing of the run is pending on it."""
    a = host.create_vm("a", "datastore1", [{"size": "1M"}], power="on")
    wrap_tool(host, "vmkfstools", 'case "$*" in *-i*) /bin/vim-cmd vmsvc/power.on %s >/dev/null 2>&1;; esac' % a,
              layer="usr_sbin")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="5s")
    r = hotvcb(host, "-m", "a", "-g", conf)
    assert r.returncode == 6, _out(r)
    assert "a is powered off" in r.stdout
    assert snapshot_names(host, a) == []
    host.power_off(a)  # the admin's maintenance
    c = hotvcb(host, "cleanup", "-g", conf)
    assert power(host, a) == "Powered off", _out(c)


# -- restore -g CONF <id> of a backup pruned since: what the -l log says ------------------------------------------------

@needs_root
def test_a_restore_of_a_pruned_id_says_why_in_its_log_file(host, tmp_path):
    """The admin's restore job (`hotvcb restore -g CONF <id> --datastore datastore1 -l /var/log/restore.log`,
    output to /dev/null) names a backup prune has removed since `list -g` showed it. Exit 1; the -l file reads
    'restore LOG START', 'HOST: esxi01' and ends there - as if the restore were still running or was killed.
    A folder backup that is not there is said in the log ('backup ... does not exist', final status, LOG END);
    README/common.load: what stops a run is said in the -l file too. The log must say why."""
    conf, sid = _repo_backup(host, tmp_path)
    # a second backup, then prune keeps only it: the first id is gone
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, _out(r)
    r = hotvcb(host, "prune", "-g", conf, "--keep-last", "1")
    assert r.returncode == 0 and sid in r.stdout, _out(r)
    log = tmp_path / "restore.log"
    r = hotvcb(host, "restore", "-g", conf, sid, "--datastore", "datastore1", "-l", log)
    assert r.returncode != 0, _out(r)
    assert "no backup in the repository matches" in _out(r)  # said on stderr (passes today)
    after = log.read_text().split("HOST:", 1)[-1]  # the first line names the id already
    assert "error" in after and sid in after, log.read_text()



@needs_root
def test_the_next_restore_on_the_host_removes_a_killed_repository_restores_folder(host, tmp_path):
    """On the ESXi host the admin runs `hotvcb restore --repo R <id> --to /vmfs/volumes/backup/out/web`, sees the
    wrong id and kills it (kill -9 / a dropped SSH session), then runs the right command at once. It is refused:
    'web.hotvcb-restoring exists: another restore ... or one that was killed left it and its death cannot be
    proven here', after the warning 'a restore whose record names no host id, not this host (no id) ...
    (another host named esxi01? ...)'; `hotvcb cleanup -g CONF` and `cleanup --kvm` say the same. There is no
    other host: the record's pid (and its start time) prove the restore dead on this very host. ESXi has no
    /etc/machine-id, which is what the record (restore_scratch.Records with runid.machine_id) carries.
    docs/restore.md: a killed `--to` restore's folder 'is removed by the next restore there'."""
    on = subprocess.run(on_host(host, "/bin/sh", "-c", "test -e /etc/machine-id"), timeout=60)
    assert on.returncode != 0  # as on ESXi: no machine id (the simulator hides the test machine's own)
    _conf, sid = _repo_backup(host, tmp_path, size="8M")
    os.makedirs(host.real("/vmfs/volumes/backup/out"))
    args = ("restore", "--repo", "/vmfs/volumes/backup/repo", sid, "--to", "/vmfs/volumes/backup/out/web")
    p = hotvcb_background(host, *args)
    first = p.stdout.readline()
    p.kill()
    p.wait()
    if "web.hotvcb-restoring" not in os.listdir(host.real("/vmfs/volumes/backup/out")):
        pytest.skip("the restore finished before it was killed: %r" % first)
    r = hotvcb(host, *args)
    assert r.returncode == 0, _out(r)
    assert os.listdir(host.real("/vmfs/volumes/backup/out")) == ["web"]
