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
    assert os.listdir(tmp_path) == ["enter.failed"]  # the next processes do not run cc again
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


def test_the_command_starts_with_no_signal_ignored_or_blocked(host, which):
    """Python ignores SIGPIPE and SIGXFSZ, and an exec keeps them ignored (and a mask blocked): a writer into a
    closed pipe went on with EPIPE where on a host (a shell from sshd) the signal ends it. restore_signals=False:
    the helper gets them as a Python caller that does not reset them hands them on."""
    p = subprocess.Popen(enter.argv(host.root, ["grep", "^Sig[IB]", "/proc/self/status"]), stdout=subprocess.PIPE,
                         text=True, restore_signals=False,
                         preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1]))
    out = p.communicate(timeout=30)[0]
    status = dict(line.split(":\t") for line in out.splitlines())
    assert int(status["SigIgn"], 16) & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)) == 0, out
    assert int(status["SigBlk"], 16) == 0, out


def _checkout(tmp_path):
    """A copy of enter.c whose _build is tmp_path/_build: (the helper's path there, its failure marker)."""
    import shutil
    import zlib
    src = os.path.join(os.path.dirname(enter.__file__), "enter.c")
    shutil.copy(src, str(tmp_path / "enter.c"))
    with open(src, "rb") as f:
        exe = tmp_path / "_build" / ("enter-%08x-%s" % (zlib.crc32(f.read()), os.uname().machine))
    return exe, tmp_path / "_build" / (exe.name + ".failed")


def test_a_helper_that_does_not_run_leaves_the_python_enter(tmp_path, monkeypatch):
    """Another libc's binary in a shared checkout, a noexec mount: executable, yet every command exited 127."""
    monkeypatch.setattr(enter, "_HERE", str(tmp_path))
    exe, _ = _checkout(tmp_path)
    exe.parent.mkdir()
    exe.write_text("#!/nonexistent/interpreter\n")
    exe.chmod(0o755)
    assert enter._build() is None
    monkeypatch.setattr(enter, "_helper", [])
    assert enter.argv("/h", ["true"])[5:8] == [enter.sys.executable, "-S", "-c"]


def test_a_failed_build_is_not_tried_again(tmp_path, monkeypatch):
    """Without cc every process (thousands a test run) spawned cc again."""
    monkeypatch.setattr(enter, "_HERE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc
    exe, failed = _checkout(tmp_path)
    assert enter._build() is None and failed.exists()
    monkeypatch.setattr(enter, "_compile", lambda src, exe: pytest.fail("cc run again"))
    assert enter._build() is None


def test_a_build_clears_what_older_sources_and_killed_compiles_left(tmp_path):
    machine = os.uname().machine
    names = ["enter-00000000-" + machine, "enter-00000000-%s.failed" % machine, "enter-00000000-othermachine",
             ".enter-killed", ".enter-building", "enter-11111111-" + machine]
    for name in names:
        (tmp_path / name).write_text("")
    os.utime(str(tmp_path / ".enter-killed"), (0, 0))
    enter._clean_build_dir(str(tmp_path / names[-1]))
    assert sorted(os.listdir(tmp_path)) == sorted(names[2:3] + names[4:])


def test_a_host_from_before_the_hostname_file_gets_its_own_name(host, which):
    """Both enters read only state/hostname: a host created before it showed this machine's hostname."""
    os.unlink(os.path.join(host.root, enter.HOSTNAME_FILE))
    state = host.state()
    state["hostname"] = "oldhost"
    host.store.write(state)
    r = subprocess.run(enter.argv(host.root, ["hostname"]), capture_output=True, text=True, timeout=30)
    assert r.stdout == "oldhost\n"
    with open(os.path.join(host.root, enter.HOSTNAME_FILE)) as f:
        assert f.read() == "oldhost\n"
