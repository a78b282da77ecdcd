"""SshShell against a real sshd on 127.0.0.1, and the same file contract as LocalShell.

The file-operation tests run against both shells (one conformance suite, two
backends); the command tests check what only SSH can get wrong: the remote
shell's quoting, streaming through the channel, and that stopping the local
ssh client also stops the command on the host.
"""

import base64
import hashlib
import os
import signal
import tarfile
import threading
import time
from pathlib import Path

import pytest

from hotvcb import cli, interrupt
from hotvcb.commands import common
from hotvcb.errors import HostError, Interrupted, TimeoutExpired
from hotvcb.localshell import LocalShell
from hotvcb.sshconnection import SshTarget
from hotvcb.sshshell import SshShell
from sshd import needs_sshd, running_sshd

pytestmark = needs_sshd

ODD_NAMES = [
    "plain",
    "two  spaces and trailing ",
    "it's",
    'say "hi"',
    "a;b && c | d",
    "$(touch /tmp/hotvcb-pwned) `id` $HOME",
    "Umlaute äöü ß – €",
    "back\\slash",
    "*?[x]",
    "-n",
    "new\nline",
    "",
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _target(sshd, known_hosts=None):
    return SshTarget(sshd.target, sshd.port, sshd.identity, known_hosts or sshd.known_hosts)


@pytest.fixture
def ssh(sshd):
    with SshShell(_target(sshd)) as shell:
        yield shell


@pytest.fixture(params=["local", "ssh"])
def shell(request, sshd):
    if request.param == "local":
        yield LocalShell()
    else:
        with SshShell(_target(sshd)) as s:
            yield s


@pytest.fixture(autouse=True)
def _no_interrupt():
    interrupt.reset()
    yield
    interrupt.reset()


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_file(path: Path, seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError("%s never appeared" % path)


# -- commands ------------------------------------------------------------------
def test_arguments_arrive_exactly_as_given(ssh, tmp_path):
    out = ssh.run(["printf", "<%s>", *ODD_NAMES]).check()
    assert out.output == "".join("<%s>" % n for n in ODD_NAMES)
    assert not os.path.exists("/tmp/hotvcb-pwned")


def test_file_named_like_a_vm_with_odd_characters(ssh, tmp_path):
    # (a newline in a file name is the one thing listdir cannot carry: ls prints a name a line)
    for name in [n for n in ODD_NAMES if n and "/" not in n and "\n" not in n]:
        folder = tmp_path / ("vm " + name)
        ssh.makedirs(str(folder))
        ssh.write_text(str(folder / (name + ".vmx")), 'displayName = "%s"\n' % name)
        assert (folder / (name + ".vmx")).read_text() == 'displayName = "%s"\n' % name
        assert ssh.listdir(str(folder)) == [name + ".vmx"]
        assert ssh.run(["cat", str(folder / (name + ".vmx"))]).check().output == 'displayName = "%s"\n' % name


def test_exit_code_and_merged_output(ssh):
    done = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done.returncode == 3
    assert "out\n" in done.output and "err\n" in done.output


def test_missing_program_is_a_host_error(ssh):
    with pytest.raises(HostError, match="cannot run /sbin/no-such-tool on .*not found"):
        ssh.run(["/sbin/no-such-tool", "-i"])


def test_progress_is_streamed_as_it_comes(shell):
    script = "for p in 10 50 90; do printf 'Clone: %s%% done.\\r' $p; sleep 0.4; done; echo; echo finished"
    seen = []
    start = time.monotonic()
    done = shell.run(["sh", "-c", script], on_output=lambda f: seen.append((f, time.monotonic() - start)))
    assert done.returncode == 0
    assert [f for f, _ in seen] == ["Clone: 10% done.", "Clone: 50% done.", "Clone: 90% done.", "finished"]
    # the first fragment arrived long before the command ended
    assert seen[0][1] < seen[-1][1] - 0.6


def test_timeout_stops_the_remote_command(ssh, tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(TimeoutExpired):
        ssh.run(["sh", "-c", 'echo $$ > "$1"; exec sleep 60', "x", str(pidfile)], timeout=1.5)
    assert time.monotonic() - start < 15
    pid = int(_wait_file(pidfile))
    _gone_soon(pid)


def test_idle_timeout(ssh):
    with pytest.raises(TimeoutExpired, match="output from"):
        ssh.run(["sh", "-c", "echo started; sleep 60"], timeout=None, idle_timeout=1)


def _gone_soon(*pids: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "remote processes still running: %s" % [p for p in pids if _alive(p)]
        time.sleep(0.05)


def test_interrupt_kills_the_remote_command_and_its_children(ssh, tmp_path):
    """After Ctrl-C no remote vmkfstools may keep copying: the command and what it started die."""
    pidfile = tmp_path / "pids"
    # a parent that starts a child (like a wrapper around vmkfstools) and ignores nothing special
    script = 'sleep 300 & echo "$$ $!" > "$1"; wait'

    def ctrl_c():
        _wait_file(pidfile)
        interrupt._handler(signal.SIGINT, None)

    t = threading.Thread(target=ctrl_c)
    t.start()
    start = time.monotonic()
    with pytest.raises(Interrupted):
        ssh.run(["sh", "-c", script, "x", str(pidfile)], timeout=None)
    t.join()
    assert time.monotonic() - start < 15
    pids = [int(p) for p in pidfile.read_text().split()]
    _gone_soon(*pids)


def test_command_that_ignores_term_is_killed(ssh, tmp_path):
    pidfile = tmp_path / "pid"
    script = "trap '' TERM; echo $$ > \"$1\"; while :; do sleep 0.1; done"
    with pytest.raises(TimeoutExpired):
        ssh.run(["sh", "-c", script, "x", str(pidfile)], timeout=1)
    _gone_soon(int(_wait_file(pidfile)), seconds=15)


def test_cleanup_commands_still_run_after_an_interrupt(ssh):
    """The snapshot removal after Ctrl-C goes over the same connection: it must still be up."""
    interrupt._handler(signal.SIGINT, None)
    with pytest.raises(Interrupted):
        ssh.run(["sleep", "5"])
    assert ssh.run(["echo", "removing snapshot"], interruptible=False).check().output == "removing snapshot\n"


def test_many_small_calls_share_one_connection(ssh, sshd):
    before = sshd.log.read_text().count("Accepted publickey")
    for _ in range(10):
        assert ssh.exists("/")
    assert sshd.log.read_text().count("Accepted publickey") == before


def test_close_stops_the_master_and_removes_its_dir(sshd):
    shell = SshShell(_target(sshd)).open()
    folder = shell._dir
    assert os.path.isdir(folder) and (os.stat(folder).st_mode & 0o077) == 0
    shell.close()
    assert not os.path.exists(folder)
    shell.close()  # idempotent


# -- host keys -----------------------------------------------------------------
def test_unknown_host_key_is_refused_with_instructions(sshd):
    with pytest.raises(HostError) as info:
        SshShell(_target(sshd, sshd.empty_known_hosts)).open()
    msg = str(info.value)
    assert "host key of [127.0.0.1]:%d is not known" % sshd.port in msg
    assert "ssh-keyscan -p %d 127.0.0.1 >> %s" % (sshd.port, sshd.empty_known_hosts) in msg
    assert "never accepts" in msg
    assert Path(sshd.empty_known_hosts).read_text() == ""  # nothing accepted behind the admin's back


def test_changed_host_key_is_refused(sshd, tmp_path):
    other = tmp_path / "known_hosts"
    fake = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + os.urandom(32)).decode()
    other.write_text("[127.0.0.1]:%d ssh-ed25519 %s\n" % (sshd.port, fake))
    with pytest.raises(HostError, match="has CHANGED") as info:
        SshShell(_target(sshd, str(other))).open()
    assert "ssh-keygen -R '[127.0.0.1]:%d'" % sshd.port in str(info.value)


def test_cli_reports_unknown_host_key(sshd, tmp_path, capsys):
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup\n")
    code = cli.main(sshd.cli_args(sshd.empty_known_hosts)
                    + ["backup", "-m", "vm1", "-g", str(conf), "-w", str(tmp_path / "work")])
    assert code == 1
    captured = capsys.readouterr()
    assert "is not known" in captured.out + captured.err


# -- CLI wiring ----------------------------------------------------------------
def test_global_options_before_ghettovcb_style_flags(monkeypatch):
    seen = {}

    def fake_run(args):
        seen["remote"] = args.host_target.ssh
        seen["names"] = args.vm_names
        return 0

    parser_build = cli.build_parser

    def build(command=None):
        p = parser_build(command)
        p._subparsers._group_actions[0].choices["backup"].set_defaults(handler=fake_run)
        return p

    monkeypatch.setattr(cli, "build_parser", build)
    assert cli.main(["--host", "root@esxi01", "--port=2222", "--ssh-option", "ConnectTimeout=5", "-m", "db 1"]) == 0
    assert seen["remote"] == SshTarget("root@esxi01", 2222, None, None, ("ConnectTimeout=5",))
    assert seen["names"] == ["db 1"]
    assert cli.main(["-m", "x"]) == 0
    assert seen["remote"] is None


# -- files: one contract, two shells -------------------------------------------
def test_text_round_trip_is_byte_exact(shell, tmp_path):
    path = str(tmp_path / "Ümlaut vm.vmx")
    text = 'displayName = "Ümlaut; \'vm\'"\r\nnvram = "x.nvram"\n\n'
    shell.write_text(path, text)
    assert Path(path).read_bytes() == text.encode("utf-8")
    assert shell.read_text(path) == text
    assert not any(n.endswith(".tmp") for n in os.listdir(str(tmp_path)))
    shell.write_text(path, "second\n")  # replaces
    assert shell.read_text(path) == "second\n"
    Path(path).write_bytes(b"caf\xe9\n")  # latin-1 from an old host
    assert shell.read_text(path) == "caf\xe9\n"


def test_missing_files_raise_host_errors(shell, tmp_path):
    missing = str(tmp_path / "nope")
    for call in (lambda: shell.read_text(missing), lambda: shell.listdir(missing),
                 lambda: shell.sha256(missing), lambda: shell.rename(missing, missing + "2"),
                 lambda: shell.copy_file(missing, missing + "2")):
        with pytest.raises(HostError, match="No such file"):
            call()
    with pytest.raises(HostError):
        shell.write_text(str(tmp_path / "no" / "dir" / "f"), "x")


def test_tree_operations(shell, tmp_path):
    root = str(tmp_path / "VM [1] +x")
    assert not shell.exists(root) and not shell.isdir(root)
    shell.makedirs(root + "/ds2/deep")
    shell.makedirs(root + "/ds2/deep")  # idempotent
    assert shell.isdir(root) and shell.exists(root)
    shell.write_text(root + "/.hidden", "h")
    shell.write_text(root + "/a b.vmdk", "a")
    shell.write_text(root + "/ds2/deep/c.vmdk", "c")
    assert shell.listdir(root) == [".hidden", "a b.vmdk", "ds2"]
    assert shell.list_files(root) == [".hidden", "a b.vmdk", "ds2/deep/c.vmdk"]
    assert not shell.isdir(root + "/a b.vmdk") and shell.exists(root + "/a b.vmdk")

    assert shell.make_new_dir(root + "/claim") is True
    assert shell.make_new_dir(root + "/claim") is False
    with pytest.raises(HostError):
        shell.make_new_dir(root + "/missing/claim")

    shell.copy_file(root + "/a b.vmdk", root + "/copy")
    assert shell.read_text(root + "/copy") == "a"
    shell.rename(root + "/copy", root + "/renamed")
    assert not shell.exists(root + "/copy") and shell.read_text(root + "/renamed") == "a"
    shell.rename(root + "/renamed", root + "/a b.vmdk")  # replaces a file
    with pytest.raises(HostError):
        shell.rename(root + "/a b.vmdk", root + "/ds2")  # never *into* a folder
    assert shell.exists(root + "/a b.vmdk")

    shell.chmod(root + "/a b.vmdk", 0o600)
    assert os.stat(root + "/a b.vmdk").st_mode & 0o777 == 0o600

    shell.remove_tree(root + "/ds2")
    shell.remove_tree(root + "/ds2")  # gone already: fine
    shell.remove_tree(root + "/.hidden")
    assert shell.listdir(root) == ["a b.vmdk", "claim"]


def test_symlink_replaces_a_link_to_a_folder(shell, tmp_path):
    root = tmp_path / "vm"
    (root / "vm-2024-01-01_00-00-00").mkdir(parents=True)
    (root / "vm-2024-01-02_00-00-00").mkdir()
    shell.symlink("vm-2024-01-01_00-00-00", str(root / "latest"))
    shell.symlink("vm-2024-01-02_00-00-00", str(root / "latest"))
    assert os.readlink(str(root / "latest")) == "vm-2024-01-02_00-00-00"
    assert os.listdir(str(root / "vm-2024-01-01_00-00-00")) == []
    assert shell.exists(str(root / "latest"))
    assert shell.realpath(str(root / "latest")) == str(root / "vm-2024-01-02_00-00-00")


def test_realpath_matches_os_path(shell, tmp_path):
    (tmp_path / "real dir").mkdir()
    os.symlink("real dir", str(tmp_path / "link"))
    for p in ("link", "link/missing file", "real dir/../real dir", "missing dir/x"):
        assert shell.realpath(str(tmp_path / p)) == os.path.realpath(str(tmp_path / p))


def test_sizes_and_checksums(shell, tmp_path):
    sparse = tmp_path / "thin-flat.vmdk"
    with open(str(sparse), "wb") as f:
        f.truncate(64 << 20)
        f.seek(1 << 20)
        f.write(b"x" * 4096)
    assert shell.file_size(str(sparse)) == 64 << 20
    assert shell.disk_usage(str(sparse)) == os.stat(str(sparse)).st_blocks * 512
    assert shell.disk_usage(str(sparse)) < 1 << 20
    blocks = []
    digest = shell.sha256(str(sparse), on_block=blocks.append)
    with open(str(sparse), "rb") as f:
        assert digest == hashlib.sha256(f.read()).hexdigest()
    assert sum(blocks) == 64 << 20


def test_a_qcow2s_disk_is_not_read_file_by_file_over_ssh(shell, tmp_path):
    """A content entry (manifest version 3) is checked by hotvcb on the host; file by file it says so
    (here, the reader itself refuses this cut-short image: either way one line, no traceback)."""
    from hotvcb.store import manifest

    image = tmp_path / "d.qcow2"
    image.write_bytes(b"QFI\xfb")
    with pytest.raises(HostError) as err:
        manifest.digest_content(shell, str(image), "qcow2")
    says = "file by file over SSH" if isinstance(shell, SshShell) else "cannot read this qcow2"
    assert says in str(err.value) and "\n" not in str(err.value)


def test_block_digests_are_computed_on_the_host(shell, tmp_path):
    """SSH mode runs blockdigest.py with the host's python: same digest as local, holes and all."""
    from hotvcb.store import manifest

    sparse = tmp_path / "thin-flat.vmdk"
    with open(str(sparse), "wb") as f:
        f.truncate(5 * (1 << 20) + 3)
        f.seek((1 << 20) - 2)
        f.write(b"across the first block edge")
    local = manifest.digest_file(LocalShell(), str(sparse))
    seen = []
    here = manifest.digest_file(shell, str(sparse), on_block=seen.append)
    assert here.entry() == local.entry() and sum(seen) == local.size
    with open(str(sparse), "rb") as f:
        data = f.read()
    assert local.sha256_of_blocks == hashlib.sha256(b"".join(
        hashlib.sha256(data[i : i + (1 << 20)]).digest() for i in range(0, len(data), 1 << 20))).hexdigest()
    v1 = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest.digest_file(shell, str(sparse), entry=v1).matches(v1)
    with pytest.raises(HostError):
        manifest.digest_file(shell, str(tmp_path / "missing"))


def test_tar_gz_layout(shell, tmp_path):
    partial = tmp_path / "vm" / "vm-2024-01-01_00-00-00-partial"
    (partial / "ds2").mkdir(parents=True)
    (partial / "vm.vmx").write_text("x")
    (partial / "ds2" / "d.vmdk").write_text("d")
    dst = str(tmp_path / "vm" / ".vm.gz.tmp")
    shell.make_tar_gz(str(partial), dst, "vm-2024-01-01_00-00-00")
    with tarfile.open(dst) as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
        assert files == ["vm-2024-01-01_00-00-00/ds2/d.vmdk", "vm-2024-01-01_00-00-00/vm.vmx"]
        assert tar.extractfile("vm-2024-01-01_00-00-00/vm.vmx").read() == b"x"
    assert sorted(os.listdir(str(tmp_path / "vm"))) == [".vm.gz.tmp", "vm-2024-01-01_00-00-00-partial"]
    shell.make_tar_gz(str(partial), dst, partial.name)  # same name: archived directly
    with tarfile.open(dst) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile())[0] == partial.name + "/ds2/d.vmdk"


def test_nothing_ssh_creates_is_writable_by_others_whatever_sshd_umask(tmp_path):
    """A host whose sessions get umask 000 (sshd itself masks 022, but pam_umask or a forced command may
    lower it): the files hotvcb makes there over SSH (the kept release and host id, records, backup
    folders) must still not be writable by group or others."""
    with running_sshd(tmp_path / "sshd", force_command='umask 000; eval "$SSH_ORIGINAL_COMMAND"') as server:
        with SshShell(_target(server)) as ssh:
            assert ssh.run(["sh", "-c", "umask"]).output.strip() == "0022"  # what a host command runs under
            ssh.makedirs(str(tmp_path / "made/deeper"))
            ssh.write_text(str(tmp_path / "made/kept"), "VMware ESXi 7.0.3 build-24784741\n")
            assert ssh.make_new_dir(str(tmp_path / "claimed"))
            ssh.copy_file(str(tmp_path / "made/kept"), str(tmp_path / "claimed/copy"))
    modes = {str(p.relative_to(tmp_path)): os.stat(str(p)).st_mode & 0o777
             for p in tmp_path.rglob("*") if "sshd" not in p.parts}
    assert len(modes) == 5 and not [p for p, m in modes.items() if m & 0o022], {p: oct(m) for p, m in modes.items()}


def test_rotation_removes_ghettovcbs_space_padded_backup_names(shell, tmp_path):
    """ghettoVCB's `date +%F_%k-%M-%S` names (`web-2026-11-28_ 3-00-01`, a space in the hour) are counted and
    removed by rotation over either shell: every file operation takes the name as one argument."""
    from test_outsider_interop import ghettovcb_folder
    from hotvcb.store import rotation

    class Log:
        def __getattr__(self, level):
            return lambda message: None

    for stamp in ("2026-11-28_ 3-00-01", "2026-11-29_ 3-00-01", "2026-11-30_ 3-00-02"):
        ghettovcb_folder(tmp_path, "web", stamp, "STATUS.ok", "Successfully completed backup")
    removed = rotation.rotate(shell, str(tmp_path), "web", 2, Log())
    assert removed == [str(tmp_path / "web" / "web-2026-11-28_ 3-00-01")]
    assert sorted(os.listdir(tmp_path / "web")) == ["web-2026-11-29_ 3-00-01", "web-2026-11-30_ 3-00-02"]
