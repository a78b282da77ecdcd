"""enter: the C helper runs every command on the host where a C compiler is (a Python start per command
cost thousands of CPU seconds' worth of 30 ms per test run), and does what the Python enter.main does."""
import os
import signal
import subprocess

import pytest

from esxisim import enter

PROBE = "hostname; pwd; echo $$; ls /vmfs/volumes; ls /run; ls /etc/vmware/esxisim-host"


@pytest.fixture(params=["c", "python"])
def which(request, monkeypatch):
    """Each test twice: the compiled helper, and the Python fallback of a machine without cc."""
    helper = enter._build() if request.param == "c" else None
    if request.param == "c":
        assert helper, "enter.c did not build"
    monkeypatch.setattr(enter, "_helper", [helper])
    return request.param


def test_the_c_helper_is_used_on_this_machine(monkeypatch):
    monkeypatch.setattr(enter, "_helper", [])
    helper = enter.argv("/h", ["true"])[5]
    assert helper.startswith(os.path.join(os.path.dirname(enter.__file__), "_build", "enter-"))
    assert os.access(helper, os.X_OK)


def test_without_a_compiler_the_python_enter_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc
    assert not enter._compile(os.path.join(os.path.dirname(enter.__file__), "enter.c"), str(tmp_path / "enter"))
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(enter, "_helper", [None])
    assert enter.argv("/h", ["true"])[5:8] == [enter.sys.executable, "-S", "-c"]


def test_the_command_runs_in_place_on_the_host(host, which, tmp_path):
    stale = os.path.join(host.root, "root", "etc", "work.999999999")  # no such pid
    os.makedirs(os.path.join(stale, "work"))
    p = subprocess.Popen(enter.argv(host.root, ["sh", "-c", PROBE]), stdout=subprocess.PIPE, text=True,
                         cwd=str(tmp_path))
    out = p.communicate(timeout=30)[0].split("\n")
    assert p.returncode == 0
    ds = sorted(host.state()["datastores"])
    assert out[:3] == ["esxi01", str(tmp_path), str(p.pid)]  # the pid Popen started is the command's
    assert [x for x in out[3:] if x in ds] == ds
    assert "sshd" in out and "/etc/vmware/esxisim-host" in out
    assert not os.path.exists(stale)


@pytest.mark.parametrize("cmd, status, err", [
    (["nosuch"], 127, "sh: nosuch: not found\n"), (["/nosuch"], 127, "sh: /nosuch: not found\n"),
    (["/etc"], 127, "sh: /etc: Permission denied\n"),
])
def test_a_command_that_does_not_run(host, which, cmd, status, err):
    r = subprocess.run(enter.argv(host.root, cmd), capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (status, err)


def test_no_host(tmp_path, which):
    r = subprocess.run(enter.argv(str(tmp_path), ["true"]), capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stderr) == (2, "esxisim: not found: no simulated host at %s\n" % tmp_path)


def test_the_command_starts_with_no_signal_ignored(host, which):
    """Python ignores SIGPIPE and SIGXFSZ, and an exec keeps them ignored: a writer into a closed pipe
    went on with EPIPE where on a host (a shell from sshd) the signal ends it."""
    r = subprocess.run(enter.argv(host.root, ["grep", "SigIgn", "/proc/self/status"]), capture_output=True,
                       text=True, timeout=30)
    ignored = int(r.stdout.split()[1], 16)
    assert ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0, r.stdout
