"""Testers' notes (session 31), each pinned through the public command line: `--host` with a port or an
IPv6 address in brackets, a VM list from a named pipe whose writer comes late, and an SSH session lost while
a restore registers its VM."""

import os
import subprocess
import sys

import pytest

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
