"""An outsider's attacks on SSH mode's on-host runs (`hotvcb --host … backup|status|…` running
hotvcb itself on the ESXi host): lost connections, a full /tmp on the host, planted folders, two
clients at once, kill -9 of the client, and what the admin is shown on each of those paths."""

import json
import os
import signal
import subprocess

import pytest

from simhost import copying, host_lock_path, needs_root, ours, sealed, wait_for, write_conf
from sshd import needs_sshd
from sshsite import replace_host_python, site  # noqa: F401  (the fixture)

pytestmark = [needs_root, needs_sshd]


def _procs():
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open("/proc/%s/stat" % pid) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out.append((int(pid), ppid, cmd))
    return out


def _under(pid):
    """(pid, cmdline) of every process below pid."""
    procs, kids = _procs(), {pid}
    grew = True
    while grew:
        grew = False
        for p, pp, _ in procs:
            if pp in kids and p not in kids:
                kids.add(p)
                grew = True
    return [(p, c) for p, _, c in procs if p in kids and p != pid]


def _vmid(host, name):
    (vmid,) = [k for k in host.state()["vms"] if host.display_name(k) == name]
    return vmid


def _run(site, *args, env=None, cwd=None):
    r = subprocess.run(site.argv(*args), capture_output=True, text=True, timeout=300,
                       env=dict(site.env(), **(env or {})), cwd=cwd)
    r.out = r.stdout + r.stderr
    return r


def _final(text):
    return [l.split(" -- ", 1)[1] for l in text.splitlines() if "Final status" in l]


def test_messages_name_the_files_the_admin_gave_never_the_hosts_temp_copies(host, site, tmp_path):
    """-g and -c are files on the Linux box; the run on the host reads copies in its temp folder,
    but the log, the errors and the JSON report must name what the admin wrote (the temp folder is
    gone when the run ends, and it is a path on another machine)."""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, BOGUS_KEY=1)
    per_vm = tmp_path / "per vm ü"
    per_vm.mkdir()
    (per_vm / "web").write_text("DISK_BACKUP_FORMAT=zzz\n")
    os.rename(conf, str(tmp_path / "-my hotvcb.conf"))  # relative, and read as a value of -g
    r = _run(site, "backup", "-m", "web", "-g", "-my hotvcb.conf", "-c", per_vm, "--json-report", "r.json",
             cwd=str(tmp_path))
    assert r.returncode == 6 and "HOST: local (" in r.out, r.out
    assert str(site.folder) not in r.out, r.out
    assert "%s/web:1: DISK_BACKUP_FORMAT='zzz' is not valid" % per_vm in r.stdout, r.stdout
    assert "CONFIG: -my hotvcb.conf;" in r.stdout and "-my hotvcb.conf:4: unknown key BOGUS_KEY" in r.stdout, \
        r.stdout
    assert r.out.count("unknown key BOGUS_KEY") == 1, r.out  # said by the host's run, not by the client as well
    [vm] = json.loads((tmp_path / "r.json").read_text())["vms"]
    assert vm["message"].startswith("%s/web:1: " % per_vm), vm


def test_a_per_vm_file_that_cannot_be_sent_fails_its_vm_as_a_run_here_does(host, site, tmp_path):
    """The -c folder's files are sent only for the VMs the run may back up; one that cannot be sent (over
    4 MiB) fails its VM on the host as a run on the Linux box fails it (same message, the admin's path),
    never backs it up with the global settings; a FIFO or a big log beside it costs the other VMs nothing."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    per_vm = tmp_path / "per vm"
    per_vm.mkdir()
    with open(str(per_vm / "web"), "wb") as f:
        f.truncate(5 << 20)
    os.mkfifo(str(per_vm / "fifo"))
    (per_vm / "db").write_text("VM_BACKUP_ROTATION_COUNT=2\n")
    said = "per-VM config file %s/web is larger than 4194304 bytes" % per_vm
    runs = [_run(site, "backup", "--file-by-file", "-m", "web", "-m", "db", "-g", conf, "-c", per_vm, "-d", "dryrun"),
            _run(site, "backup", "-m", "web", "-m", "db", "-g", conf, "-c", per_vm, "-d", "dryrun"),
            _run(site, "backup", "-a", "-g", conf, "-c", per_vm, "-d", "dryrun")]
    for r in runs:
        assert r.returncode == 4 and "web: %s" % said in r.out and str(site.folder) not in r.out, r.out
    assert "going file by file" not in runs[1].out + runs[2].out, runs[1].out + runs[2].out
    assert "fifo" not in runs[1].out, runs[1].out  # not named, so not read


def test_a_dropped_connection_ends_with_a_final_status_and_a_real_report(host, site, tmp_path):
    """sshd's end of the connection dies mid-copy: the run on the host stops and cleans up by
    itself; the client ends like any failed run (final status line in its output and -l log, a
    --json-report that says ERROR), never an empty `{}` report, with exit 2: the host's end stopped the run
    as a signal does (README; 1 would say no VM was started)."""
    host.create_vm("web", "datastore1", [{"size": "8M"}], power="on")
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1)  # the VM is off while it is copied
    report, log = tmp_path / "r.json", tmp_path / "client.log"
    host.set_fault("clone.delay", "30")
    try:
        proc = subprocess.Popen(site.argv("backup", "-m", "web", "-g", conf, "--json-report", report, "-l", log),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=site.env(), text=True)
        wait_for(lambda: copying(host, "web"), 60, "the copy")
        for pid, cmd in _under(site.sshd.proc.pid):
            if cmd.startswith("sshd: root"):  # the connection's processes, not the listener
                os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        host.clear_faults()
    assert proc.returncode == 2 and "Traceback" not in out, out
    [final] = _final(out)  # "lost the SSH connection to …" (or "the SSH session … ended", if ssh says so)
    assert final.startswith("info: ###### Final status: ERROR: ") and "SSH" in final, out
    assert _final(log.read_text()) == [final]
    data = json.loads(report.read_text())
    assert data["exit_code"] == 2 and "###### Final status: %s ######" % data["status"] in final, data
    assert data["job"] == "hotvcb" and data["vms"] == [], data
    # the host's end stopped the run: snapshot gone, lock free, VM on again, the partial backup not good
    wait_for(lambda: not ours(host, _vmid(host, "web")) and not os.path.exists(host_lock_path(host)), 60,
             "the run on the host to clean up")
    assert sealed(host, "web") == [] and host.state()["vms"][_vmid(host, "web")]["power"] == "on"
    wait_for(lambda: [n for n in os.listdir(str(site.folder)) if n.startswith("run-")] == [], 30,
             "the run's folder (config copies) to go")


@pytest.fixture
def small_tmp(tmp_path, request):
    """A tmpfs of request.param bytes: the host's /tmp (a ramdisk on ESXi) almost full. Mounted
    before the site fixture starts sshd in the host's mount namespace, so the host sees it."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % request.param, "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("small_tmp", [224 << 10], indirect=True)  # room for the build, not for more
def test_a_full_tmp_on_the_host_goes_file_by_file_and_leaves_nothing_there(small_tmp, host, site):
    """Room for the build but not for the run's output and report: the backup was done, yet the
    client said it failed (exit 120). With no room for the build, a part of it stayed to fill the
    ramdisk for good. The host's end now refuses a nearly full folder before anything is sent: the
    run goes file by file, and /tmp holds no scraps."""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    folder = small_tmp / "onhost"
    r = _run(site, "backup", "-m", "web", "-g", write_conf(host, BOGUS_KEY=1), env={"HOTVCB_HOST_FOLDER": str(folder)})
    assert r.returncode == 0, r.out
    assert "KiB free in %s" % folder in r.out and "going file by file over SSH" in r.out, r.out
    assert r.out.count("unknown key BOGUS_KEY") == 1, r.out  # the client's, as the run stayed here
    assert len(sealed(host, "web")) == 1
    assert [n for n in os.listdir(str(folder)) if not n.endswith(".pyz")] == [], os.listdir(str(folder))


def _host_python(host, script):
    """The host's python and python3 replaced by a shell script (a host that misbehaves)."""
    from esxisim import toolgen

    def write(path):
        with open(path, "w") as f:
            f.write(script.replace("PY38", toolgen.PY38))
        os.chmod(path, 0o755)

    replace_host_python(host, write)


def test_sigterm_while_the_host_starts_hotvcb_ends_like_any_interrupted_run(host, site, tmp_path):
    """SIGTERM (systemd stopping the job) while the host's python is still starting: nothing runs
    there yet, but the run must still end as an interrupted run does - exit 2, the final status
    line, the --json-report and the alert mail - not with a bare 'interrupted' and no report."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail part")
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    _host_python(host, '#!/bin/sh\nsleep 3\nexec PY38 "$@"\n')  # a slow (busy) host
    report = tmp_path / "r.json"
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, EMAIL_ALERT=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                          EMAIL_TLS="none", EMAIL_TO="admin@example.com")
        proc = subprocess.Popen(site.argv("backup", "-m", "web", "-g", conf, "--json-report", report),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=site.env(), text=True)
        wait_for(lambda: any("HOTVCB-ONHOST" in c for _, c in _under(site.sshd.proc.pid)), 30,
                 "the host's end to start")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert _final(out) == ["info: ###### Final status: ERROR: interrupted by SIGTERM ######"], out
    data = json.loads(report.read_text())
    assert data["exit_code"] == 2 and data["status"] == "ERROR: interrupted by SIGTERM", data
    [mail] = server.messages
    assert mail.message["Subject"].endswith("hotvcb: ERROR: interrupted by SIGTERM"), mail.message["Subject"]
    assert ours(host, _vmid(host, "web")) == [] and not os.path.exists(host_lock_path(host))
    wait_for(lambda: not site.folder.exists() or sorted(os.listdir(str(site.folder))) == site.kept(), 30,
             "no scraps on the host")


def test_a_damaged_build_folder_entry_never_stops_backups(host, site):
    """A directory where the host's end stores the build (hand-made, a half-done cleanup): the build
    cannot be stored, and every backup of the host failed with 'ended without its report' although
    nothing had run there. Whatever fails before the run starts on the host: file by file."""
    import hashlib

    from hotvcb import pyzpack

    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    site.folder.mkdir(mode=0o700)
    build = site.folder / ("hotvcb-%s.pyz" % hashlib.sha256(pyzpack.this_package()).hexdigest())
    build.mkdir()
    r, trips = site.run("backup", "-m", "web", "-g", write_conf(host))
    assert r.returncode == 0 and len(sealed(host, "web")) == 1, r.out
    assert "Is a directory" in r.out and "going file by file over SSH" in r.out, r.out
    assert os.listdir(str(site.folder)) == [build.name] and build.is_dir(), "nothing else left there"


def test_a_link_planted_at_the_build_folder_is_not_followed(host, site, tmp_path):
    """/tmp is world-writable: anyone may create /tmp/hotvcb-onhost first, as a link to a private
    looking folder of root's. hotvcb (running as root) must not store or run a build through it."""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    site.folder.symlink_to(elsewhere)
    r, trips = site.run("status", "-g", write_conf(host))
    assert "is not a private folder of this user" in r.out and "going file by file over SSH" in r.out, r.out
    assert r.returncode == 2 and "Traceback" not in r.out, r.out  # CRIT: web has no backup yet
    assert os.listdir(str(elsewhere)) == [] and site.folder.is_symlink()


def test_kill_9_of_the_client_before_the_run_leaves_nothing_on_the_host(host, site, tmp_path):
    """kill -9 while the host's end starts (before the build and the request arrive): that end reads
    a cut frame and stops; no run folder, no part of a build (the next run would trust it)."""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    _host_python(host, '#!/bin/sh\nsleep 2\nexec PY38 "$@"\n')
    proc = subprocess.Popen(site.argv("backup", "-m", "web", "-g", conf), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=site.env())
    wait_for(lambda: any("HOTVCB-ONHOST" in c for _, c in _under(site.sshd.proc.pid)), 30, "the host's end")
    proc.kill()
    proc.wait()
    wait_for(lambda: not any("HOTVCB-ONHOST" in c for _, c in _under(site.sshd.proc.pid)), 30,
             "the host's end to stop")
    assert os.listdir(str(site.folder)) == [], "no build, no run folder"
    assert not os.path.exists(host_lock_path(host)) and sealed(host, "web") == []


@pytest.mark.parametrize("args, code", [
    (["status", "-g", "/dev/zero"], 3),  # a monitoring plugin's UNKNOWN, not a check that never answers
    (["restore", "-c", "FIFO"], 1),
], ids=["status-conf-dev-zero", "restore-file-fifo"])
def test_a_fifo_or_device_given_as_a_file_to_send_is_refused_not_read_forever(site, tmp_path, args, code):
    """Local mode opens only regular files (adminfile.read_text); the files SSH mode sends to the host
    were read whole: a FIFO hung the command for good, /dev/zero filled memory."""
    fifo = tmp_path / "vms ü fifo"
    os.mkfifo(str(fifo))
    argv = [str(fifo) if a == "FIFO" else a for a in args]
    r = subprocess.run(site.argv(*argv), capture_output=True, text=True, timeout=60, env=site.env())
    assert r.returncode == code, r.stdout + r.stderr
    assert "%s is not a regular file" % argv[-1] in r.stdout + r.stderr and "Traceback" not in r.stderr, r.stderr


def test_two_clients_at_once_against_a_host_that_holds_no_build_yet(host, site):
    """Both find no build, both send it, both store it; one run takes the host's lock and the other
    is refused (or runs after it): one build is left, no scraps, no snapshot, and a refused client
    ends as a refused local run does (exit 1, the lock in its final status)."""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host)
    procs = [subprocess.Popen(site.argv("backup", "-m", "web", "-g", conf), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=site.env(), text=True) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 1]), outs
    for p, out in zip(procs, outs):
        assert "Traceback" not in out and "going file by file" not in out, out
        if p.returncode == 1:
            [final] = _final(out)
            assert "another hotvcb run holds /var/run/hotvcb.lock" in final, out
    assert len(sealed(host, "web")) == codes.count(0)
    assert sorted(os.listdir(str(site.folder))) == site.kept() and len(site.builds()) == 1
    assert ours(host, _vmid(host, "web")) == [] and not os.path.exists(host_lock_path(host))
