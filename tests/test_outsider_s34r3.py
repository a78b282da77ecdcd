"""Outside test, stop 34 round 3: SSH mode's snapshot removal carried past a lost connection
(jobs/snapshot_removal.py), and restore dry runs' sweep. Each defect is a strict xfail asserting the right
behaviour.

Tried and found sound (no test here, or a passing control): sshd stopped for good during a removal (the snapshot
left and said, "remove it by hand", each later VM fails fast, exit 6); a connection cut during snapshot.create
with hostd finishing it (the late snapshot found and removed, exit 6, none left); a removal cut before hostd
started it (asked again, the backup stands, exit 0, final status OK); a copy failing with its reason on stderr over
SSH (the reason shown); restore dry runs (repository --to, repository --kvm, folder --kvm) over a killed restore's
leftovers, over a stopped live restore, and into missing / file / existing targets: nothing changed on disk, the
dry run exits as the real run.
"""

import os
import re
import time

import pytest

from simhost import backup_dirs, hotvcb, hotvcb_background, needs_root, ours, tree, wrap_tool, write_conf
from sshd import needs_sshd
from sshsite import site  # noqa: F401  (the fixture)



def _vmid(host, name):
    return [k for k in host.state()["vms"] if host.display_name(k) == name][0]


# in front of the host's vim-cmd: a snapshot removal is hostd's task, which goes on whether or not the session
# that asked for it lives (the real vim-cmd detached from the session, its answer passed on when it ends); each
# removal asked is counted
HOSTD_TASK = """\
case " $* " in *snapshot.remove*)
  echo "$$" >> %(rec)s
  o=$(mktemp); setsid "$0.real" "$@" > "$o" 2>&1 < /dev/null & p=$!
  wait $p; r=$?; cat "$o"; rm -f "$o"; exit $r;;
esac
"""


def _cut_during_removal(host, site, tmp_path, delay):
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    rec = tmp_path / "removals"
    wrap_tool(host, "vim-cmd", HOSTD_TASK % {"rec": rec})
    host.set_fault("snapshot.remove.delay", str(delay))
    code, out = site.cut(("backup", "--file-by-file", "-m", "web", "-g", conf), rec, "the snapshot's removal")
    time.sleep(delay + 1)  # any removal still under way on the host ends
    host.clear_faults()
    return code, out, ours(host, _vmid(host, "web")), rec.read_text().split(), conf


@needs_root
@needs_sshd
def test_a_removal_under_way_when_the_connection_drops_is_not_asked_twice(host, site, tmp_path):
    """esxi01's link drops while hostd consolidates the backup's snapshot (a consolidation of a busy VM takes
    minutes). hotvcb reconnects, sees the snapshot still listed - hostd is still merging it - and asks for a
    second removal of the same snapshot while the first runs. When the first ends, the second fails with
    vim.fault.NotFound, and hotvcb says `snapshot ... could NOT be removed: ... NotFound -- remove it by hand`
    and records the good, finished copy as a failed backup (exit 1). The VM is fine and has no snapshot left:
    the backup should stand (or at least a NotFound for a snapshot asked again should be taken as gone)."""
    code, out, left, removals, _conf = _cut_during_removal(host, site, tmp_path, 6)
    assert not left, out  # control: hostd's first removal went through
    assert "Traceback" not in out, out
    assert "remove it by hand" not in out and code == 0, "exit %d, %d removals asked:\n%s" % (code, len(removals), out)
    assert "Successfully completed backup for web" in out, out



# -- 2. restore dry runs: a dead restore's leftovers said, nothing changed ------------------------------------------

ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{8}")


def _repo_backup(host, tmp_path, size="8M"):
    host.create_vm("web", "datastore1", [{"size": size}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    [sid] = ID.findall(hotvcb(host, "list", "-g", conf).stdout)
    return conf, sid


def _killed(host, args, where):
    """`hotvcb args` killed -9 after its first line: whether it left a restore's folder in `where`."""
    p = hotvcb_background(host, *args)
    taken = lambda: any(n.endswith(".hotvcb-restoring") for n in os.listdir(str(where)))  # noqa: E731
    deadline = time.monotonic() + 30
    while not taken() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.kill()
    p.wait()
    p.stdout.close()
    return taken()


@needs_root
@pytest.mark.parametrize("how", ["repo-to", "repo-kvm", "folder-kvm"])
def test_a_restore_dry_run_over_a_killed_restores_leftovers_changes_nothing(host, tmp_path, how):
    """The admin killed a restore, and dry-runs it again before the real run: the dry run says what the
    sweep would remove, changes nothing anywhere (names, sizes, mtimes of the target folder and the backups'
    folder), and exits as the real run then does."""
    conf, sid = _repo_backup(host, tmp_path)
    backup = host.real("/vmfs/volumes/backup")
    if how == "repo-to":
        os.makedirs(host.real("/vmfs/volumes/backup/out"))
        where = host.real("/vmfs/volumes/backup/out")
        args = ("restore", "--repo", "/vmfs/volumes/backup/repo", sid, "--to", "/vmfs/volumes/backup/out/web")
    elif how == "repo-kvm":
        where = tmp_path / "kvm"
        where.mkdir()
        args = ("restore", "-g", conf, sid, "--kvm", where)
    else:
        c2 = write_conf(host)
        assert hotvcb(host, "-m", "web", "-g", c2).returncode == 0
        where = tmp_path / "kvm"
        where.mkdir()
        args = ("restore", backup_dirs(host, "web")[-1], "--kvm", where)
    if not _killed(host, args, where):
        pytest.skip("the restore finished (or left nothing) before it was killed")
    before = (tree(backup), tree(where))
    time.sleep(0.05)
    dry = hotvcb(host, *args, "-d", "1")
    assert "Traceback" not in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    after = (tree(backup), tree(where))
    real = hotvcb(host, *args)
    changed = sorted(k for i in (0, 1) for k in set(before[i]) | set(after[i]) if before[i].get(k) != after[i].get(k))
    assert not changed, (changed, dry.stdout + dry.stderr)
    assert dry.returncode == real.returncode, (dry.stdout + dry.stderr, real.stdout + real.stderr)


# -- 1b. the master gone for the rest of the run ---------------------------------------------------------------------

# in front of the host's vim-cmd: the run's first snapshot removal is slow to start (the link is cut then; the
# removal is asked again over a new connection and goes through)
FIRST_REMOVAL_LATE = """\
case " $* " in *snapshot.remove*) [ -e %(rec)s ] || { echo "$$" > %(rec)s.tmp; mv %(rec)s.tmp %(rec)s; sleep 3; };; esac
"""
# in front of the host's vmkfstools: db's clone fails, saying why, with exit 255
DB_CLONE_FAILS_255 = """\
case " $* " in *" -i "*/db/*) echo "Failed to clone disk: No space left on device (1835017)."; exit 255;; esac
"""


@needs_root
@needs_sshd
def test_after_the_master_died_a_commands_own_exit_255_is_not_called_a_lost_connection(host, site, tmp_path):
    """`hotvcb backup --file-by-file -a` over SSH: the link blips during app's snapshot removal; hotvcb looks again
    over a new connection, the removal goes through, app's backup stands. For the rest of the run there is no
    master connection (SshConnection never opens another; each command connects on its own, and `_broken` takes
    ssh's 255 with no master alive as a lost connection). db's clone then fails on the host with vmkfstools' own
    exit 255 and its reason, `No space left on device` - and hotvcb reports `lost the SSH connection to ...: ssh
    exited 255`, though the command's answer came complete over a sound connection. The admin chases a network
    problem instead of a full datastore; a removal that exits 255 would be asked again three times likewise."""
    for name in ("app", "db"):
        host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    rec = tmp_path / "first-removal"
    wrap_tool(host, "vim-cmd", FIRST_REMOVAL_LATE % {"rec": rec})
    wrap_tool(host, "vmkfstools", DB_CLONE_FAILS_255, layer="usr_sbin")
    _code, out = site.cut(("backup", "--file-by-file", "-a", "-g", conf), rec, "app's snapshot removal", timeout=200)
    assert "Successfully completed backup for app" in out, out  # control: the blip itself was carried through
    assert not ours(host, _vmid(host, "db")), out
    line = [ln for ln in out.splitlines() if "error in backing up" in ln and "db" in ln]
    assert line and "No space left on device" in line[0] and "lost the SSH connection" not in line[0], out
