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
