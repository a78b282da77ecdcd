"""Run hotvcb on a simulated ESXi host, the way it runs on a real one.

hotvcb is started inside the host's mount namespace with the host's own
/bin/python (3.8 where pyenv has it), so every test also proves the 3.8 floor.
"""

import glob
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from esxisim import Host, enter, toolgen, tools  # noqa: E402

VOLUME = "/vmfs/volumes/backup/hotvcb"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root for unshare -m")


def make_host(root, backup_capacity=2 << 30) -> Host:
    host = Host.create(str(root), version="7.0.3", crond=False)
    host.add_datastore("datastore1", 2 << 30, vmfs=6)
    host.add_datastore("ds5", 2 << 30, vmfs=5)
    host.add_datastore("backup", backup_capacity, vmfs=6)
    return host


def small_host(root, version="7.0.3") -> Host:
    """A host of two 1 GiB datastores (datastore1, backup) and no cron: what a file's shared host needs, one
    VM of its own per test."""
    host = Host.create(str(root), version=version, crond=False)
    host.add_datastore("datastore1", 1 << 30, vmfs=6)
    host.add_datastore("backup", 1 << 30, vmfs=6)
    return host


def write_conf(host: Host, name="hotvcb.conf", **keys) -> str:
    values = {"VM_BACKUP_VOLUME": VOLUME, "DISK_BACKUP_FORMAT": "thin", "VM_BACKUP_ROTATION_COUNT": "3"}
    values.update({k: str(v) for k, v in keys.items()})
    path = os.path.join(host.root, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join("%s=%s\n" % kv for kv in values.items()))
    return path


def on_host(host: Host, *cmd) -> list:
    """The command line that runs cmd on the host, exec'd in place: the process a test starts is the
    command itself (a signal sent to it reaches hotvcb; killed, its status is -N), and no Python
    stays in between (`esxisim shell` would cost a Python start per call, thousands per run)."""
    return enter.argv(host.root, [str(a) for a in cmd])


def host_python(host: Host, *args, timeout=300) -> subprocess.CompletedProcess:
    """The host's own /bin/python run with `args` (`"-c", code` or `"-m", module, ...`) on the host (on_host),
    hotvcb and tests/ on its path (a test's snippet driving a driver there, tests/driver_contract.py, countshell)."""
    tests = os.path.join(REPO, "tests")
    return subprocess.run(on_host(host, "env", "PYTHONPATH=%s:%s" % (REPO, tests), "/bin/python", *args),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))


def _argv(host: Host, args):
    return on_host(host, "env", "PYTHONPATH=" + REPO, "/bin/python", "-m", "hotvcb", *args)


def hotvcb(host: Host, *args, timeout=180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(_argv(host, args), capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def db_backed_up_elsewhere(host: Host, tmp_path) -> tuple:
    """VMs web and db backed up once with `-c`, db's per-VM file sending its backups to
    /vmfs/volumes/ds5/db-only: (config, per-VM config folder)."""
    conf = write_conf(host)
    for vm in ("web", "db"):
        host.create_vm(vm, "datastore1", [{"size": "1M"}], power="on")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text("VM_BACKUP_VOLUME=/vmfs/volumes/ds5/db-only\n")
    r = hotvcb(host, "-a", "-g", conf, "-c", str(confdir))
    assert r.returncode == 0, r.stdout + r.stderr
    return conf, confdir


def unmounted_share(host: Host, point="/vmfs/volumes/backup/nas") -> str:
    """An NFS share's mount point in the host's /etc/fstab with nothing mounted there (the share did not mount
    tonight): the empty folder on the host's own disk that a backup must refuse and leave empty. Returns it."""
    os.makedirs(host.real(point))
    etc = host.store.p("root", "etc", "upper")
    os.makedirs(etc, exist_ok=True)
    with open(os.path.join(etc, "fstab"), "w") as f:
        f.write("nas:/export %s nfs defaults 0 0\n" % point)
    return point


def hotvcb_background(host: Host, *args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(_argv(host, args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=REPO)


def vim(host: Host, *args) -> str:
    """What `vim-cmd args` prints on the host. The suite asks thousands of times (power states, snapshot
    lists): while the host's vim-cmd is esxisim's own, the call runs in this process (same code, same
    process log, no namespace and no two interpreters to start: ~45 ms of CPU each); a vim-cmd a test
    has wrapped (wrap_tool, a gate) runs on the host as any other command."""
    args = tuple(str(a) for a in args)
    if _tool_is_esxisims(host, "vim-cmd"):
        out = io.StringIO()
        with _IN_PROCESS, redirect_stdout(out), redirect_stderr(io.StringIO()):
            try:
                tools.run_logged(host, "vim-cmd", args)
            except Exception:  # noqa: BLE001 - a crash of the command: what it printed, as from a process
                pass
        return out.getvalue()
    r = subprocess.run(on_host(host, "/bin/vim-cmd", *args),
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO))
    return r.stdout


_IN_PROCESS = threading.Lock()  # sys.stdout is the process's: one in-process call at a time


def _tool_is_esxisims(host: Host, tool: str) -> bool:
    try:
        with open(host.store.p("root", "usr_bin", "upper", tool), encoding="utf-8") as f:
            return f.read() == toolgen.script(host, tool)
    except OSError:
        return False


def power(host: Host, vmid: str) -> str:
    """The VM's power state as `vim-cmd vmsvc/power.getstate` says it ("Powered on", ...)."""
    return vim(host, "vmsvc/power.getstate", vmid).strip().splitlines()[-1]


def snapshot_names(host: Host, vmid: str):
    return [l.split(":", 1)[1].strip() for l in vim(host, "vmsvc/snapshot.get", vmid).splitlines()
            if "Snapshot Name" in l]


def backup_root(host: Host, vm: str) -> str:
    return host.real(VOLUME + "/" + vm)


def backup_dirs(host: Host, vm: str):
    """vm's backup folders (every directory under its backup root, finished or not), sorted."""
    root = backup_root(host, vm)
    return sorted(p for p in glob.glob(os.path.join(glob.escape(root), "*")) if os.path.isdir(p))


def copying(host: Host, vm: str) -> bool:
    """A disk copy into one of vm's unfinished (-partial) backups has started: vmkfstools has
    created its output file."""
    return bool(glob.glob(os.path.join(glob.escape(backup_root(host, vm)), "*-partial", "*.vmdk")))


def backups(host: Host, vm: str):
    root = backup_root(host, vm)
    if not os.path.isdir(root):
        return []
    return sorted(e for e in os.listdir(root) if not os.path.islink(os.path.join(root, e))
                  and not e.endswith(".verify.json") and not e.startswith(".hotvcb-"))  # sidecars, records


def sealed(host: Host, vm: str):
    root = backup_root(host, vm)
    return [b for b in backups(host, vm) if os.path.exists(os.path.join(root, b, "STATUS.ok"))]


def manifest(host: Host, vm: str, entry: str):
    with open(os.path.join(backup_root(host, vm), entry, "hotvcb.json"), encoding="utf-8") as f:
        return json.load(f)


def tree(path) -> dict:
    """Every name under `path` with its mode, size and mtime, and the folder's own: what a run that must write
    nothing there (a dry run, `status`) may not change, a probe made and removed included."""
    out = {}
    for d, ds, fs in os.walk(str(path)):
        for n in ds + fs:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[os.path.relpath(p, str(path))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    st = os.lstat(str(path))
    out["."] = (st.st_mode, st.st_mtime_ns)
    return out


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def wrap_tool(host: Host, tool: str, before: str, layer: str = "usr_bin") -> None:
    """The shell `before` runs in front of the host's `tool` (vim-cmd, vmware; vmkfstools with
    `layer="usr_sbin"`) on every call, with the call's arguments in "$@", then the real tool: a
    hostd that is slow or misbehaves, in the host's own /bin as hostd's answers come, without
    touching the simulator."""
    path = host.store.p("root", layer, "upper", tool)
    os.rename(path, path + ".real")
    with open(path, "w") as f:
        f.write('#!/bin/sh\n%s\nexec "$0.real" "$@"\n' % before)
    os.chmod(path, 0o755)


def host_lock_path(host: Host) -> str:
    """The run lock hotvcb keeps on the host (/var/run/hotvcb.lock, /run being the host's own)."""
    return host.store.p("root", "run", "upper", "hotvcb.lock")


def lock_pid(host: Host):
    """The pid of the hotvcb run holding the host's lock, or None."""
    try:
        with open(host_lock_path(host)) as f:
            m = re.search(r"pid=(\d+)", f.read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def kill(pid: int, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def change_during_run(host: Host, args, ready, what: str, change):
    """hotvcb `args` in the background, and `change()` done to the host once `ready()`: (exit code,
    output). Pass or fail, the run is killed after."""
    run = hotvcb_background(host, *args)
    try:
        wait_for(ready, timeout=60, what=what)
        change()
        out, _ = run.communicate(timeout=120)
    finally:
        kill(run.pid)
    return run.returncode, out


def sigterm_when(run: subprocess.Popen, ready, what: str, hung: str):
    """SIGTERM `run` once `ready()`: (its output, seconds from the signal to its end). Pass or fail,
    the run is killed after, and so is the hung question whose pid the file `hung` holds."""
    try:
        wait_for(ready, timeout=60, what=what)
        began = time.monotonic()
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=60)
        return out, time.monotonic() - began
    finally:
        kill(run.pid)
        pid = open(hung).read().strip() if os.path.exists(hung) else ""
        if pid:
            kill(int(pid))


def listing(host: Host, conf: str, vm=None):
    """`hotvcb list --json`'s backups."""
    r = hotvcb(host, "list", "--json", "-g", conf, *([vm] if vm else []))
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["backups"]


def good(host: Host, conf: str, vm: str):
    """Names of the VM's backups that hotvcb calls good."""
    return [b["name"] for b in listing(host, conf, vm) if b["good"]]


def ours(host: Host, vmid: str):
    """hotvcb's snapshots on the VM."""
    return [n for n in snapshot_names(host, vmid) if n.startswith("hotvcb-")]


def next_second():
    """Sleep into the wall clock's next whole second. Backup names (and runs, checkpoints) have one-second
    resolution: a run started after this is named apart from every run that has ended, whose name's second
    is at most the one this began in. Half a second on average where a fixed 1.05 s cost the suite minutes."""
    time.sleep(1.01 - time.time() % 1)


def backup_once(host: Host, conf: str, vm: str, *extra, env=None):
    """One backup of vm, named apart from every run that ended before it (next_second)."""
    next_second()
    saved = {k: os.environ.get(k) for k in env or ()}
    os.environ.update(env or {})
    try:
        return hotvcb(host, "-m", vm, "-g", conf, *extra)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def killed_while_compressing(host: Host, vm: str = "web"):
    """A new powered-on VM whose compressed backup (ENABLE_COMPRESSION=1) was killed once its archive was
    written, before it was published: the `-partial` folder and the `.gz.tmp` a dead run leaves. Returns
    (the config, the real path of the VM's backup folder)."""
    host.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, ENABLE_COMPRESSION=1)
    backup_once(host, conf, vm, env={"HOTVCB_CRASH_AT": "compressed"})
    return conf, os.path.join(host.real(VOLUME), vm)


def as_another_hosts_run(partial: str, untouched_for: float) -> None:
    """The `-partial` folder made another machine's run, working on another host sharing the volume, its
    owner file and folder last touched `untouched_for` seconds ago by this machine's clock (a live run's
    where the NFS server's clock lags ours; a dead one's where it does not)."""
    owner = os.path.join(partial, ".hotvcb-owner")
    with open(owner) as f:
        text = f.read()
    text = re.sub(r" mid=\S+", "", re.sub(r"host=\S+", "host=otherhost", re.sub(r"machine=\S+", "machine=otherbox", text)))
    with open(owner, "w") as f:
        f.write(text)
    old = time.time() - untouched_for
    for path in (owner, partial):
        os.utime(path, (old, old))


def backed_up(host: Host, vm: str, workdir) -> str:
    """The path of the sealed backup one good run of vm just made (the run must succeed: what a restore test
    starts from)."""
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "-w", workdir)
    assert r.returncode == 0, r.stdout + r.stderr
    return VOLUME + "/" + vm + "/" + sealed(host, vm)[-1]


def backed_up_into_repository(host: Host, repository: str, vm: str, size: str, workdir) -> str:
    """A new powered-on VM's one good backup into the repository at `repository` (the run must succeed):
    the config it ran with."""
    host.create_vm(vm, "datastore1", [{"size": size}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY=repository)
    r = hotvcb(host, "backup", "-m", vm, "-g", conf, "-w", workdir)
    assert r.returncode == 0, r.stdout + r.stderr
    return conf


def set_version(path: str, version: int) -> None:
    """A repository's JSON file (its config, a backup's record) rewritten as of another format `version`."""
    with open(path) as f:
        data = json.load(f)
    data["version"] = version
    os.chmod(path, 0o644)
    with open(path, "w") as f:
        json.dump(data, f)


SHARED_VOLUME = "/vmfs/volumes/nfsbackup/hotvcb"


@contextmanager
def two_hosts_sharing_nfs(tmp_path, vm="web", **conf):
    """Hosts esxi-a and esxi-b, each with its own VM `vm` (4M, on), both backing
    up to one NFS volume: yields (a, b, conf_a, conf_b, nfs folder)."""
    nfs = tmp_path / "nfs"
    nfs.mkdir()
    hosts = []
    try:
        for n in ("a", "b"):
            h = Host.create(str(tmp_path / n), version="7.0.3", hostname="esxi-" + n, nfs_root=str(nfs), crond=False)
            hosts.append(h)
            h.add_datastore("datastore1", 2 << 30, vmfs=6)
            h.add_nfs("nfsbackup", "10.0.0.5", "/export", 4 << 30)
            # each host its own id, whatever the machine's real /run holds (the overlay's lower layer)
            ids = h.store.p("root", "run", "upper")
            os.makedirs(ids, exist_ok=True)
            with open(os.path.join(ids, "hotvcb.hostid"), "w") as f:
                f.write("idesxi" + n + "\n")
            h.create_vm(vm, "datastore1", [{"size": "4M"}], power="on")
        a, b = hosts
        conf_a, conf_b = (write_conf(h, VM_BACKUP_VOLUME=SHARED_VOLUME, **conf) for h in hosts)
        yield a, b, conf_a, conf_b, nfs
    finally:
        for h in hosts:
            h.stop()


class HostRelay:
    """Hosts handed on from one test case to the next in a worker (a module-scoped fixture's value), for cases
    that each begin with the same costly state (a VM's first good backup) and end in it again, as their own
    last assertions prove (the next run repaired all, one good backup, nothing left over): the state is made
    once, not in every case. A case hands its host on only when it got to the end, so a failure never
    leaks into the next case: that one builds afresh."""

    def __init__(self, tmp_path_factory):
        self._factory = tmp_path_factory
        self._made = []
        self._ready = {}

    def take(self, key, build):
        """(host, what build gave, whether it is new): the host handed on under `key`, else a new host that
        `build(host)` prepared."""
        if key in self._ready:
            host, value = self._ready.pop(key)
            return host, value, False
        host = make_host(self._factory.mktemp("host"))
        self._made.append(host)
        return host, build(host), True

    def hand_on(self, key, host, value):
        self._ready[key] = (host, value)

    def stop(self):
        for host in self._made:
            host.stop()
