"""Testers' notes (session 31), each pinned through the public command line: `--host` with a port or an
IPv6 address in brackets, a VM list from a named pipe whose writer comes late, and an SSH session lost while
a restore registers its VM."""

import os
import subprocess
import sys
import threading
import time

import pytest

from localcli import local, qemu, said  # noqa: F401  (qemu: the fixture)
from simhost import REPO, needs_root, write_conf
from sshsite import site  # noqa: F401  (the fixture)


def _without(argv, *options):
    """`argv` less the given options and their values."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in options:
            skip = True
        else:
            out.append(word)
    return out


# -- --host with a port, or an IPv6 address in brackets -------------------------------------------------------

@needs_root
@pytest.mark.parametrize("form", ["{user}@{addr}:{port}", "{user}@[{addr}]:{port}", "{user}@[{addr}]"])
def test_host_takes_a_port_and_brackets_as_a_hosts_file_line_does(site, form):
    """`--host esx1:2222` reached ssh as the host name "esx1:2222" (and `root@[::1]` with its brackets): ssh
    failed, or resolved a name nobody meant. `status --hosts FILE` read both forms; `--host` reads them alike."""
    sshd = site.sshd
    dest = form.format(user=sshd.user, addr=sshd.host, port=sshd.port)
    argv = [dest if w == sshd.target else w for w in site.argv("status", "-g", write_conf(site.host))]
    if not form.endswith("]"):  # a port in it, not one in --port too (that port stays when the form has none)
        argv = _without(argv, "--port")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=site.env(), cwd=REPO)
    assert "VMware ESXi 7.0.3" in r.stdout and "cannot connect" not in r.stdout, r.stdout + r.stderr  # reached


def test_a_port_in_host_and_another_in_port_is_refused_naming_both():
    """`--host esx1:2222 --port 2200`: which one was meant cannot be guessed; the run says so before connecting."""
    r = subprocess.run([sys.executable, "-m", "hotvcb", "--host", "root@esx1:2222", "--port", "2200", "status"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    assert r.returncode != 0 and "2222" in r.stderr and "2200" in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- a VM list from a named pipe whose writer comes a moment later --------------------------------------------

def _late_writer(fifo, text, after):
    """A script feeding `fifo`: it opens it `after` seconds from now, writes `text` and closes it."""
    def feed():
        time.sleep(after)
        with open(str(fifo), "w") as pipe:
            pipe.write(text)
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return writer


@pytest.mark.parametrize("option", ["-f", "-e"])
def test_a_fifo_whose_writer_opens_late_is_waited_for_as_cat_waits(qemu, tmp_path, option):
    """`mkfifo vms; feed-vms > vms & hotvcb -f vms`: the writer opened the FIFO half a second after hotvcb looked,
    and the list read as empty, "names no VM" (with -e, the run refused its exclusions). `cat vms` waits for
    the writer; so does the run (up to pipetext's 60 s), and reads what it wrote: here a VM not on the host."""
    fifo = tmp_path / "vms"
    os.mkfifo(str(fifo))
    writer = _late_writer(fifo, "ghost\n", 0.5)
    what = ["-a", "-e"] if option == "-e" else ["-f"]
    r = local("--qemu", qemu[0], "backup", *what, fifo, "-g", qemu[1], "-d", "dryrun", timeout=90)
    writer.join(5)
    assert "names no VM" not in said(r) and "ghost" in said(r), said(r)


def test_a_pipe_whose_writer_ended_without_a_word_is_not_waited_for(qemu, tmp_path):
    """`-f <(grep web all-vms)` finding nothing: the writer has come and gone (it is no named pipe waiting
    for one), so the list is empty at once, not after the 60 s a late writer gets."""
    started = time.monotonic()
    line = 'exec 3< <(true); sleep 0.3; exec "$@" -f /dev/fd/3'  # `true` has ended when hotvcb opens its pipe
    r = subprocess.run(["bash", "-c", line, "bash", sys.executable, "-m", "hotvcb", "--qemu", str(qemu[0]),
                        "backup", "-g", str(qemu[1])], capture_output=True, text=True, timeout=90, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=REPO))
    assert r.returncode == 1 and "names no VM" in said(r) and time.monotonic() - started < 30, said(r)


@pytest.mark.parametrize("command", ["backup", "status"])
@pytest.mark.parametrize("fifo", [True, False], ids=["fifo", "file"])
def test_one_list_given_as_both_f_and_e_is_refused(tmp_path, command, fifo):
    """`-f vms -e vms` (one FIFO, one writer): its one line went to whichever list was read first, and the run
    did what neither said; with a file, every VM it names was both chosen and left out. Refused before any
    list is read (a FIFO without a writer is not waited for), also spelled two ways (`vms`, `./vms`)."""
    vms = tmp_path / "vms"
    if fifo:
        os.mkfifo(str(vms))
    else:
        vms.write_text("web\n")
    conf = tmp_path / "c.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/datastore1/backups\n")
    r = local(command, "-f", "vms", "-e", "./vms", "-g", conf, cwd=tmp_path, timeout=30)
    assert r.returncode != 0 and "one file" in said(r) and "Traceback" not in said(r), said(r)


# -- an SSH session lost while a restore registers its VM -----------------------------------------------------

def _ssh_sessions(port, before):
    """The session ssh clients (not the master connection) to the sshd on `port` started since `before`."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    rows = [line.strip().split(None, 1) for line in out.splitlines() if line.strip()]
    return [int(r[0]) for r in rows if len(r) == 2 and os.path.basename(r[1].split()[0]) == "ssh"
            and int(r[0]) not in before and "-p %d " % port in r[1] and "ControlMaster=yes" not in r[1]]


@needs_root
@pytest.mark.parametrize("mode", [[], ["--file-by-file"]], ids=["on-host", "file-by-file"])
def test_a_session_killed_while_the_restore_registers_names_it_and_a_rerun_finds_the_vm(site, mode):
    """The restore's SSH session dies while `vim-cmd solo/registervm` waits for hostd (the Linux box's OOM
    killer, a dropped VPN): hostd registers the VM anyway. The run says the session broke and fails; the admin
    must not be left with a VM registered that the run said was not, or a rerun that trips over it."""
    import signal

    host = site.host
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r, _ = site.run("backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.out
    host.set_fault("registervm.delay", "10")
    before = set(_ssh_sessions(site.sshd.port, set()))
    argv = site.argv("restore", *mode, "--latest", "web", "-g", conf, "--datastore", "datastore1", "--name", "web2")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=site.env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while "web2" not in [host.display_name(k) for k in host.state()["vms"]] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        for pid in _ssh_sessions(site.sshd.port, before):
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        host.clear_faults()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0 and "Traceback" not in out, out
    assert "SSH session to %s broke" % site.sshd.target in out, out
    (vmid,) = [k for k in host.state()["vms"] if host.display_name(k) == "web2"]  # hostd registered it, once
    if mode:  # the restore ran here and asks the inventory again; on the host the run stopped with its session
        assert "registered it as vmid %s" % vmid in out and "register it with" not in out, out
    else:
        assert "the run on the host stopped with it" in out, out
    rerun, _ = site.run("restore", *mode, "--latest", "web", "-g", conf, "--datastore", "datastore1", "--name", "web2")
    assert rerun.returncode != 0 and "registered as vmid %s" % vmid in rerun.out, rerun.out
    assert [k for k in host.state()["vms"] if host.display_name(k) == "web2"] == [vmid]
