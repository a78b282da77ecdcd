"""SSH mode end to end: hotvcb on "the Linux box", the ESXi host behind a real sshd.

sshd runs inside the simulated host (``esxisim shell HOST -- sshd ...``;
the ForceCommand variant, one esxisim shell per session, is exercised once
as well since it costs a second per command), so vim-cmd, vmkfstools and
/vmfs exist only at the far end of the connection, as on a real host. The same VM is backed up in local mode (hotvcb inside the host)
and in SSH mode; the results must match.
"""

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import procs
from hotvcb.errors import TimeoutExpired
from simhost import host_lock_path, next_second
from sshd import needs_sshd, running_sshd
from sshsite import host_sshd

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [needs_sshd]

VM = "Prüf; it's &VM& 1"  # a quote-free name: a " in a VMDK extent name breaks qemu-img
BK = "/vmfs/volumes/backup/bk"


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def local_hotvcb(host, *args, timeout=180):
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", sys.executable, "-m", "hotvcb"]
                       + list(args), capture_output=True, timeout=timeout, env=_env(), cwd=str(ROOT))
    r.out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r


def ssh_argv(sshd, *args):
    return [sys.executable, "-m", "hotvcb"] + sshd.cli_args() + list(args)


def ssh_hotvcb(sshd, *args, timeout=180):
    r = subprocess.run(ssh_argv(sshd, *args), capture_output=True, timeout=timeout, env=_env(), cwd=str(ROOT))
    r.out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    return r


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root for unshare -m")
    sys.path.insert(0, str(ROOT))
    from esxisim import Host

    root = tmp_path_factory.mktemp("sshe2e")
    host = Host.create(str(root / "host"), version="7.0.3", crond=False)
    host.add_datastore("datastore1", 2 << 30)
    host.add_datastore("ds2", 1 << 30)
    host.add_datastore("backup", 2 << 30)
    disks = [{"size": "8M", "bus": "scsi"}, {"size": "8M", "bus": "sata"}, {"size": "8M", "datastore": "ds2"}]
    host.create_vm(VM, "datastore1", disks, power="on", writer=True, vmxf=True)
    conf = root / "g.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=thin\nVM_BACKUP_ROTATION_COUNT=10\n" % BK,
                    encoding="utf-8")
    with host_sshd(host, root / "sshd") as sshd:
        yield host, conf, sshd, root
    host.stop()


def backups(host):
    folder = host.real("%s/%s" % (BK, VM))
    if not os.path.isdir(folder):
        return []
    return sorted(e for e in os.listdir(folder) if e.startswith(VM + "-") and not e.endswith("-partial"))


def files_of(folder):
    out = {}
    for d, _, fs in os.walk(folder):
        for f in fs:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def proof_of(path, block=1 << 20):
    """Manifest v2's sha256_of_blocks (docs/backup-format.md), computed the obvious way."""
    with open(path, "rb") as fh:
        data = fh.read()
    return hashlib.sha256(b"".join(hashlib.sha256(data[i : i + block]).digest()
                                   for i in range(0, len(data), block))).hexdigest()


def check_sealed(host, name):
    folder = host.real("%s/%s/%s" % (BK, VM, name))
    files = files_of(folder)
    assert "STATUS.ok" in files, sorted(files)
    manifest = json.loads(Path(folder, "hotvcb.json").read_text(encoding="utf-8"))
    assert manifest["result"] == "ok"
    for rel, entry in manifest["files"].items():
        # what the host hashed (its python running blockdigest.py) is what is on disk
        assert entry["sha256_of_blocks"] == proof_of(os.path.join(folder, rel)), rel
    return files, manifest


def test_ssh_backup_matches_local_backup(site, tmp_path):
    host, conf, sshd, root = site
    r = local_hotvcb(host, "backup", "-m", VM, "-g", str(conf), "-w", str(tmp_path / "wl"))
    assert r.returncode == 0, r.out
    (local,) = backups(host)
    next_second()  # the next backup gets another timestamp
    r = ssh_hotvcb(sshd, "backup", "-m", VM, "-g", str(conf), "-w", str(tmp_path / "ws"))
    assert r.returncode == 0, r.out
    assert "Final status: All VMs backed up OK!" in r.out
    (remote,) = [b for b in backups(host) if b != local]
    local_files, local_manifest = check_sealed(host, local)
    remote_files, remote_manifest = check_sealed(host, remote)
    assert sorted(remote_files) == sorted(local_files)
    assert sorted(remote_manifest["files"]) == sorted(local_manifest["files"])
    # the guest kept writing between the two runs: the config files are identical, the disks
    # are each a consistent snapshot-time image (checked by qemu-img below)
    for rel in local_files:
        if not rel.endswith(".vmdk") and rel not in ("hotvcb.json",) and not rel.startswith("STATUS."):
            assert remote_files[rel] == local_files[rel], rel
    for rel in remote_files:
        if rel.endswith(".vmdk") and "-flat" not in rel:
            p = os.path.join(host.real("%s/%s/%s" % (BK, VM, remote)), rel)
            check = subprocess.run(["qemu-img", "check", p], capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr
    # our snapshots are gone, the VM still runs, and the master connection was closed at exit
    state = host.state()["vms"]
    (vmid,) = [k for k in state if host.display_name(k) == VM]
    assert host.power_state(vmid) == "on"
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "vim-cmd",
                        "vmsvc/snapshot.get", vmid], capture_output=True, text=True, env=_env())
    assert "hotvcb" not in r.stdout
    assert not [p for p in _procs() if "hotvcb-ssh-" in p[1] and str(sshd.port) in p[1]]


# SSH mode runs hotvcb on a host whose python can (one round trip per run, hostrun.py), and
# drives it file by file where it cannot (or when told to); both must keep every promise
MODES = {"on the host": ([], "HOST: local ("), "file by file": (["--file-by-file"], "HOST: ssh://")}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_ssh_and_local_backups_of_a_quiet_vm_are_identical(site, tmp_path, mode):
    """With the guest's writer stopped, both modes must produce byte-identical backups."""
    host, conf, sshd, root = site
    state = host.state()["vms"]
    (vmid,) = [k for k in state if host.display_name(k) == VM]
    from esxisim import writer

    writer.stop(host, vmid)
    try:
        before = set(backups(host))
        r = local_hotvcb(host, "backup", "-m", VM, "-g", str(conf), "-w", str(tmp_path / "wl"))
        assert r.returncode == 0, r.out
        (local,) = set(backups(host)) - before
        next_second()
        flags, says = MODES[mode]
        r = ssh_hotvcb(sshd, "backup", "-m", VM, "-g", str(conf), "-w", str(tmp_path / "ws"), *flags)
        assert r.returncode == 0, r.out
        assert says in r.out, r.out
        (remote,) = set(backups(host)) - before - {local}
        local_files, _ = check_sealed(host, local)
        remote_files, _ = check_sealed(host, remote)
        # every clone gets a fresh CID and ddb.uuid: descriptors are compared without those
        assert sorted(remote_files) == sorted(local_files)
        for rel, digest in local_files.items():
            if rel == "hotvcb.json":
                continue
            if rel.endswith(".vmdk") and "-flat" not in rel:
                assert _descriptor(host, remote, rel) == _descriptor(host, local, rel), rel
            else:
                assert remote_files[rel] == digest, rel
    finally:
        writer.start(host, vmid)


def _descriptor(host, backup, rel):
    text = Path(host.real("%s/%s/%s" % (BK, VM, backup)), rel).read_text(encoding="utf-8")
    unique = ("CID=", "ddb.longContentID", "ddb.uuid")
    return [line for line in text.splitlines() if not line.startswith(unique)]


def _procs():
    return [(pid, b" ".join(argv).decode("utf-8", "replace")) for pid, argv in procs.argvs()]


def test_force_command_wrapper(site, tmp_path):
    """Each session in its own `esxisim shell` (a wrapper process between sshd and the command)."""
    host, conf, _, root = site
    force = "env PYTHONPATH=%s %s -m esxisim shell %s -- sh -c \"$SSH_ORIGINAL_COMMAND\"" % (
        shlex.quote(str(ROOT)), shlex.quote(sys.executable), shlex.quote(host.root))
    from hotvcb.hosts.esxi import EsxiHost
    from hotvcb.sshconnection import SshTarget
    from hotvcb.sshshell import SshShell

    with running_sshd(tmp_path / "sshd", force_command=force) as sshd:
        with SshShell(SshTarget(sshd.target, sshd.port, sshd.identity, sshd.known_hosts)) as shell:
            esxi = EsxiHost(shell)
            assert esxi.describe().startswith("VMware ESXi 7.0.3")
            assert VM in [ref.name for ref in esxi.list_vms()]
            assert shell.exists("/vmfs/volumes/datastore1/%s/%s.vmx" % (VM, VM))
            pidfile = host.real("/vmfs/volumes/backup/pid")
            with pytest.raises(TimeoutExpired):
                shell.run(["sh", "-c", 'echo $$ > "$1"; exec sleep 120', "x", "/vmfs/volumes/backup/pid"],
                          timeout=3)
            pid = int(Path(pidfile).read_text())
            deadline = time.monotonic() + 10
            while os.path.exists("/proc/%d" % pid):
                assert time.monotonic() < deadline, "command behind the wrapper still runs"
                time.sleep(0.1)


def _backup_in_a_clone(site, tmp_path, flags):
    """A backup over SSH, returned once vmkfstools copies on the host (slowed to ~60 s)."""
    host, conf, sshd, root = site
    host.set_fault("clone.delay", "60")
    earlier = {p for p, c in _procs() if "vmkfstools" in c and VM in c}  # a clone of an earlier test, ending
    log = tmp_path / "client.log"
    proc = subprocess.Popen(ssh_argv(sshd, "backup", "-m", VM, "-g", str(conf), "-w", str(tmp_path / "w"),
                                     "-l", str(log), *flags),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), cwd=str(ROOT))
    deadline = time.monotonic() + 60
    # this run's clone: a clone of the VM that started after the run said which host it is on (once, beside
    # the other SSH files, a clone this run had not started was taken for its own before it had connected)
    while not (log.exists() and "HOST: " in log.read_text(errors="replace")
               and [p for p, c in _procs() if "vmkfstools" in c and VM in c and p not in earlier]):
        assert time.monotonic() < deadline and proc.poll() is None, "no clone started"
        time.sleep(0.1)
    return proc


def _stopped_and_clean(host, before, within=30):
    """The copy stopped, our snapshot is gone, and what the run left is marked failed. `within` is a
    deadline for a loaded machine (a test failed once at load 12 with 10 s), not a speed claim."""
    state = host.state()["vms"]
    (vmid,) = [k for k in state if host.display_name(k) == VM]
    deadline = time.monotonic() + within
    while True:
        copying = [p for p, c in _procs() if "vmkfstools" in c and VM in c]
        r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "vim-cmd",
                            "vmsvc/snapshot.get", vmid], capture_output=True, text=True, env=_env())
        if not copying and "hotvcb" not in r.stdout and not os.path.exists(host_lock_path(host)):
            break
        assert time.monotonic() < deadline, "still on the host: %s %s" % (copying, r.stdout)
        time.sleep(0.5)
    for name in set(backups(host)) - before:  # an interrupted run is recorded as failed, never good
        folder = host.real("%s/%s/%s" % (BK, VM, name))
        assert "STATUS.error" in os.listdir(folder) and "STATUS.ok" not in os.listdir(folder)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_ctrl_c_during_a_remote_clone(site, tmp_path, mode):
    """SIGINT while vmkfstools copies on the host: the copy stops there, our snapshot is removed."""
    host = site[0]
    before = set(backups(host))
    flags, says = MODES[mode]
    try:
        proc = _backup_in_a_clone(site, tmp_path, flags)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        text = out.decode("utf-8", "replace")
        assert proc.returncode == 2, text
        assert says in text and "Final status: ERROR" in text, text  # the run's own end, relayed
        _stopped_and_clean(host, before)
    finally:
        host.clear_faults()


def test_a_killed_client_stops_the_run_on_the_host(site, tmp_path):
    """kill -9 of hotvcb on the Linux box: its ssh channel closes, and the run on the host, told
    so by the EOF, stops and removes its snapshot (file by file, the next run would have to)."""
    host = site[0]
    before = set(backups(host))
    try:
        proc = _backup_in_a_clone(site, tmp_path, [])
        proc.kill()
        proc.communicate(timeout=30)
        _stopped_and_clean(host, before, within=60)
    finally:
        host.clear_faults()


def test_schedule_of_an_ssh_host_keeps_every_global_option_and_asks_the_host(site, tmp_path):
    """Issue 10 items 1-2: `hotvcb --host … schedule install` (or the options after --) installs the
    job with exactly those options, once the host has answered and the VM names are found on it."""
    host, conf, sshd, root = site
    units = tmp_path / "units"
    install = ["schedule", "install", "--platform", "linux", "--systemd", "--unit-dir", str(units),
               "--cron", "0 1 * * *", "--"]
    job = ["-m", VM, "-g", str(conf)]
    env = dict(_env(), PATH="/usr/bin:/bin")
    expected = "--host %s --port %d --identity %s --known-hosts %s --ssh-option ConnectTimeout=9 backup -m " % (
        sshd.target, sshd.port, sshd.identity, sshd.known_hosts)
    for argv in (sshd.cli_args() + ["--ssh-option", "ConnectTimeout=9"] + install + job,
                 install + sshd.cli_args() + ["--ssh-option=ConnectTimeout=9"] + job):
        r = subprocess.run([sys.executable, "-m", "hotvcb"] + argv, capture_output=True, text=True, timeout=120,
                           env=env, cwd=str(ROOT))
        assert r.returncode == 0, r.stderr
        # the job is named after the host (schedule.default_job); installed twice, it is one job
        [service] = [p.read_text() for p in units.glob("hotvcb-*.service")]
        assert "# hotvcb:127.0.0.1-%d\n" % sshd.port in service, service
        assert expected in service, service
    r = subprocess.run([sys.executable, "-m", "hotvcb"] + sshd.cli_args() + install + ["-m", VM.upper(), "-g",
                       str(conf)], capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    assert r.returncode == 1 and "(did you mean %r?)" % VM in r.stderr, r.stderr


def test_lists_and_per_vm_configs_on_the_client_reach_the_run_on_the_host(site, tmp_path):
    """-f, -e and -c name files on the Linux box; the run on the host gets their contents (the
    per-VM file's 2gbsparse shows in what was written) and nothing of them stays on the host. The job name
    was `-dash job` (a dash-led value) until -j took `schedule --job`'s rule (a line break in it cost the
    mail): such a name is refused now."""
    host, conf, sshd, root = site
    (tmp_path / "vms").write_text("# the list\n%s\nnot here\n" % VM, encoding="utf-8")
    (tmp_path / "skip").write_text("not here\n", encoding="utf-8")
    (tmp_path / "per-vm").mkdir()
    (tmp_path / "per-vm" / VM).write_text("DISK_BACKUP_FORMAT=2gbsparse\n", encoding="utf-8")
    folder = tmp_path / "onhost"
    before = set(backups(host))
    r = subprocess.run(ssh_argv(sshd, "backup", "-f", str(tmp_path / "vms"), "-e", str(tmp_path / "skip"),
                                "-c", str(tmp_path / "per-vm"), "-g", str(conf), "-j", "dash.job-1"),
                       capture_output=True, timeout=180, cwd=str(ROOT),
                       env=dict(_env(), HOTVCB_HOST_FOLDER=str(folder)))
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "HOST: local (" in out and "job dash.job-1" in out, out
    (new,) = set(backups(host)) - before
    files, _ = check_sealed(host, new)
    assert [f for f in files if f.endswith("-s001.vmdk")], sorted(files)
    builds = [b for b in os.listdir(str(folder)) if b.endswith(".pyz")]
    assert sorted(p.name for p in folder.iterdir()) == sorted(builds + [b[: -len(".pyz")] for b in builds])


def test_status_and_restore_latest_on_the_host_read_the_per_vm_folder_on_the_client(site, tmp_path):
    """`status -c` and `restore --latest --vm-configs` over SSH run on the host with the client's per-VM
    folder sent along (as the backup's -c): the VM whose file sends it to its own volume is judged and
    restored from there."""
    host, conf, sshd, root = site
    own = "/vmfs/volumes/ds2/own"
    (tmp_path / "per-vm").mkdir()
    (tmp_path / "per-vm" / VM).write_text("VM_BACKUP_VOLUME=%s\n" % own, encoding="utf-8")
    r = ssh_hotvcb(sshd, "backup", "-m", VM, "-g", str(conf), "-c", str(tmp_path / "per-vm"))
    assert r.returncode == 0 and "going file by file" not in r.out, r.out
    r = ssh_hotvcb(sshd, "status", "-g", str(conf), "-c", str(tmp_path / "per-vm"), "--json")
    [check] = [c for c in json.loads(r.stdout)["checks"] if c["kind"] == "backup" and c["name"] == VM]
    assert check["severity"] == "OK" and check["details"]["newest_good"].startswith(own + "/"), check
    r = ssh_hotvcb(sshd, "restore", "--latest", VM, "-g", str(conf), "--vm-configs", str(tmp_path / "per-vm"),
                   "--datastore", "datastore1", "--name", "from own", "-d", "1")
    assert r.returncode == 0 and own + "/" in r.out and "going file by file" not in r.out, r.out
