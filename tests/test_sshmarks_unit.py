"""The marks around a command's answer over SSH (sshscripts.begun): what the host's login shell prints before
(a greeting) and after (a farewell from an EXIT trap) is never part of the answer, and a file read through
RemoteReader arrives byte for byte. A local `sh` stands in for the host's login shell."""

import hashlib
import os
import subprocess
import tempfile

import pytest

from hotvcb import sshscripts as sh
from hotvcb import wrapperrun
from hotvcb.errors import ConnectionLost, HostError

GREETING = "printf 'Welcome to esxi01'; echo 'esxi01: audited' >&2; "
FAREWELL = "trap 'echo \"esxi01: session closed\"' EXIT; "


def _session(remote, around=GREETING + FAREWELL):
    return subprocess.Popen(["sh", "-c", around + remote], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _reading(argv, path, mark, broken, stdin=subprocess.DEVNULL):
    """A RemoteReader of a local process standing in for ssh, its stderr to a file as SshShell.open_binary's."""
    errout = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=errout.fileno())
    return sh.RemoteReader(proc, path, mark, broken, errout)


def _not_broken(_rc, _out):
    return None


def _read(path, size, chunk, around=GREETING + FAREWELL):
    mark = sh.new_mark()
    reader = _reading(["sh", "-c", around + sh.begun(mark, sh.join(["cat", "--", path]))], path, mark, _not_broken)
    reader.CHUNK = chunk
    with reader:
        if size < 0:
            return reader.read()
        parts = []
        while True:
            part = reader.read(size)
            if not part:
                return b"".join(parts)
            assert len(part) <= size
            parts.append(part)


def _contents():
    other = sh.begun(sh.new_mark(), "x").encode("ascii")  # another session's marks, inside a file
    end_of_mark = b"\nhotvcb-output-ends-"
    return {
        "empty": b"",
        "all bytes": bytes(range(256)) * 300 + b"\r\n\n",
        "no final newline": b"abc",
        "blank lines at the end": b"abc\n\n\n",
        "other marks": b"\n" + other + b"\n" + other,
        "an end mark's start last": b"data" + end_of_mark,
        "random": os.urandom(200000),
    }


@pytest.mark.parametrize("name", sorted(_contents()))
@pytest.mark.parametrize("size,chunk", [(-1, 65536), (1, 5), (4096, 7), (65536, 65536), (7, 1 << 20)])
def test_a_file_read_between_a_greeting_and_a_farewell_arrives_byte_for_byte(tmp_path, name, size, chunk):
    data = _contents()[name]
    path = tmp_path / "file"
    path.write_bytes(data)
    assert _read(str(path), size, chunk) == data
    assert _read(str(path), size, chunk, around="") == data  # a quiet shell


def test_a_call_answer_is_cut_at_both_marks():
    mark = sh.new_mark()
    proc = _session(sh.begun(mark, sh.snippet("printf 'a\\n\\nb'; exit 3", [])))
    out, _err = proc.communicate()
    assert proc.returncode == 3  # the command's exit code, past the end mark and the trap
    assert sh.after_mark(out, mark) == b"a\n\nb"
    assert out.endswith(b"esxi01: session closed\n")  # control: the farewell was there


def test_an_answer_cut_short_is_no_answer_and_is_said_so():
    mark = sh.new_mark()
    out, _err = _session(sh.begun(mark, "printf abc; exec true")).communicate()
    assert sh.after_mark(out, mark) is None
    assert "cut short" in sh.no_answer(out, mark)
    assert "login shell did not run" in sh.no_answer(b"Welcome\n", mark)


def test_a_binary_read_cut_short_raises(tmp_path):
    mark = sh.new_mark()
    reader = _reading(["sh", "-c", GREETING + FAREWELL + sh.begun(mark, "printf abc; exec true")], "/f", mark,
                      _not_broken)
    with reader, pytest.raises(HostError, match="cut short"):
        reader.read()


def test_a_binary_read_on_a_broken_session_names_the_connection():
    """ssh's own exit (255, the master gone) is looked at before the missing begin mark is blamed on the host."""
    def lost(rc, out):
        return HostError("lost the SSH connection to esxi01: %s" % out.strip()) if rc == 255 else None
    reader = _reading(["sh", "-c", "echo 'ssh: connect to host esxi01 port 22: Connection refused' >&2; exit 255"],
                      "/f", sh.new_mark(), lost)
    with reader, pytest.raises(HostError) as err:
        reader.read()
    assert "lost the SSH connection" in str(err.value) and "login shell" not in str(err.value)


def test_a_failed_cat_is_a_host_error(tmp_path):
    with pytest.raises(HostError, match="No such file"):
        _read(str(tmp_path / "missing"), -1, 65536)


def test_sha256_is_read_from_its_own_line_not_a_greeting_of_hex(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"payload")
    mark = sh.new_mark()
    greeting = "echo '%s  motd'; " % ("a" * 64)
    out = subprocess.run(["sh", "-c", greeting + FAREWELL + sh.join(["sh", "-c", sh.SHA256, "hotvcb", str(path),
                                                                    mark])],
                         capture_output=True, text=True).stdout
    assert sh.sha256_of(out, mark) == hashlib.sha256(b"payload").hexdigest()
    assert sh.sha256_of("%s  %s\n" % ("a" * 64, path), mark) == ""


# -- the command's exit code on its end line: a link lost after it is not the command's failure --

def _lost(rc, out):
    """The connection's verdict as SshConnection's: ssh's 255 with the master gone is a lost link."""
    return ConnectionLost("lost the SSH connection to esxi01") if rc == 255 else None


# a session whose link drops once its command line (a `begun` one, the last argument) has ended: ssh exits 255
_LOST = ["sh", "-c", GREETING + FAREWELL + 'sh -c "$1"; exit 255', "ssh"]


def _then_lost(remote):
    return subprocess.Popen(_LOST + [remote], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("code", [0, 3, 255])
def test_the_end_line_carries_the_commands_exit_code(code):
    mark = sh.new_mark()
    out, _err = _session(sh.begun(mark, sh.snippet("echo hi; exit %d" % code, []))).communicate()
    assert sh.end_code(out, mark) == code
    assert sh.after_mark(out, mark) == b"hi\n"


def test_an_end_line_cut_before_its_code_gives_none():
    mark = sh.new_mark()
    out, _err = _session(sh.begun(mark, "true")).communicate()
    whole = out[:out.index(b"hotvcb-output-ends-")] + b"hotvcb-output-ends-" + mark.encode("ascii")
    assert sh.end_code(whole, mark) is None  # the link dropped inside the end line
    assert sh.end_code(whole + b" 25", mark) is None  # "255" cut short is no 25
    assert sh.end_code(whole + b" 0\n", mark) == 0


def test_a_clone_that_ended_well_stands_though_the_link_dropped_after_its_end_line():
    mark = sh.new_mark()
    seen = []
    proc = _then_lost(sh.begun(mark, sh.wrapped(["sh", "-c", "echo Clone: 100% done."]), stderr=True))
    done = wrapperrun.follow(proc, ["vmkfstools"], " on esxi01", timeout=30, idle_timeout=None,
                             on_output=seen.append, interruptible=False, mark=mark, broken=_lost)
    assert done.returncode == 0 and done.output == "Clone: 100% done.\n"
    assert seen == ["Clone: 100% done."]  # neither the greeting nor the end line with its code


def test_a_command_that_failed_keeps_its_code_though_the_link_dropped_after():
    mark = sh.new_mark()
    proc = _then_lost(sh.begun(mark, sh.wrapped(["sh", "-c", "echo 'No space left on device'; exit 255"]),
                               stderr=True))
    done = wrapperrun.follow(proc, ["vmkfstools"], " on esxi01", timeout=30, idle_timeout=None, on_output=None,
                             interruptible=False, mark=mark, broken=_lost)
    assert done.returncode == 255 and "No space left" in done.output  # the command's own 255


def test_an_end_line_without_its_code_leaves_the_verdict_to_the_connection():
    mark = sh.new_mark()
    framing = "echo hotvcb-output-begins-%s; echo done; echo; printf hotvcb-output-ends-%s; exit 255" % (mark, mark)
    proc = subprocess.Popen(["sh", "-c", framing], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    with pytest.raises(ConnectionLost):
        wrapperrun.follow(proc, ["vim-cmd"], " on esxi01", timeout=30, idle_timeout=None, on_output=None,
                          interruptible=False, mark=mark, broken=_lost)


def test_a_file_read_whole_stands_though_the_link_dropped_after_its_end_line(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"payload\n")
    mark = sh.new_mark()
    remote = sh.begun(mark, sh.join(["cat", "--", str(path)]), stderr=True)
    with _reading(_LOST + [remote], str(path), mark, _lost) as reader:
        assert reader.read() == b"payload\n"
        assert reader.read() == b""  # the session's end looked at: the cat's own exit code, 0


def test_a_short_command_keeps_its_code_though_the_link_dropped_after_its_end_line(monkeypatch):
    """SshConnection._call (file operations, EXISTS's exit 1 a "no"): the end line's code, not ssh's 255."""
    from hotvcb.sshconnection import SshConnection
    conn = SshConnection.__new__(SshConnection)
    monkeypatch.setattr(conn, "open", lambda: conn, raising=False)
    monkeypatch.setattr(conn, "_broken", _lost, raising=False)
    monkeypatch.setattr(conn, "_session", lambda remote, stdin, stderr: _then_lost(remote), raising=False)
    assert conn._call("echo yes; exit 1")[:2] == (1, b"yes\n")
