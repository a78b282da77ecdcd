"""Outside tester (out-cancel): dropped host questions end their commands (background.Ahead/Kept,
cmdstream.stream's given_up), the one chain check for sparse disks (backup_check.require_chain_inside), and
zlib chunks decoded as one bounded stream (repo/codec.py). Attacked through the CLI on esxisim where a
host is involved, through the library API elsewhere."""

import hashlib
import os
import shlex
import signal
import struct
import subprocess
import threading
import time
import zlib

import pytest
from simhost import (backups, hotvcb, hotvcb_background, lock_pid, needs_root, ours, sealed, wait_for, wrap_tool,
                     write_conf)
from test_backup_check_chain import _check, _sparse, needs_qemu_img
from test_host_commands_e2e import _running

from hotvcb.errors import HotvcbError, RepoError
from hotvcb.repo import codec
from hotvcb.repo.format import ZLIB


# --- zlib chunks --------------------------------------------------------------------------------------------
RAW = b"".join(b"row %d of the chunk\n" % i for i in range(4000))


def _decode(stored, raw=RAW):
    return codec.decode(ZLIB, stored, len(raw), hashlib.sha256(raw).digest())


@pytest.mark.parametrize("name,stored", [
    ("trailing garbage", zlib.compress(RAW) + b"garbage"),
    ("one trailing zero", zlib.compress(RAW) + b"\0"),
    ("two concatenated streams", zlib.compress(RAW) + zlib.compress(RAW)),
    ("stream + empty stream", zlib.compress(RAW) + zlib.compress(b"")),
    ("first half + second half as two streams", zlib.compress(RAW[:len(RAW) // 2]) + zlib.compress(RAW[len(RAW) // 2:])),
])
def test_a_zlib_chunk_with_anything_after_its_stream_is_refused(name, stored):
    with pytest.raises(RepoError):
        _decode(stored)


def test_an_empty_stream_is_a_zero_length_chunk_and_nothing_else_is():
    assert bytes(_decode(zlib.compress(b""), b"")) == b""
    assert bytes(_decode(memoryview(zlib.compress(b"", 9)), b"")) == b""
    for stored in (b"", zlib.compress(b"x"), zlib.compress(b"") + b"\0", zlib.compress(b"")[:-1]):
        with pytest.raises(RepoError):
            _decode(stored, b"")


def test_a_chunk_exactly_its_length_at_the_output_bound_reads():
    """The output is bounded to raw_len+1: a stream whose content ends exactly at raw_len, its adler32 after,
    must still reach eof (its trailer read) within that bound."""
    for n in (1, 2, 4095, 4096, 65535, 65536):
        raw = bytes(range(256)) * (n // 256 + 1)
        raw = raw[:n]
        for level in (0, 1, 9):
            assert bytes(_decode(zlib.compress(raw, level), raw)) == raw


# --- Kept / Ahead: a question dropped as it finishes --------------------------------------------------------
def test_a_question_dropped_while_others_wait_lets_a_waiter_ask_itself_not_fail():
    """Two callers of one kept answer; the first (a dropped Ahead) is in a slow command. Dropping it ends
    its command with Cancelled: the waiter must then ask itself and get the good answer, not the
    cancellation as the answer's failure."""
    from hotvcb.background import Ahead, Kept
    from hotvcb.localshell import LocalShell
    kept, shell = Kept(), LocalShell()
    started = threading.Event()
    calls = []

    def slow():
        calls.append(1)
        started.set()
        r = shell.run(["sh", "-c", "sleep %d; echo 'VMware ESXi 7.0.3 build-1'" % (300 if len(calls) == 1 else 0)],
                      interruptible=False)
        return r.output.strip()

    first = Ahead(lambda: kept.get(slow), "first")
    assert started.wait(30)
    got = []
    waiter = threading.Thread(target=lambda: got.append(_catch(lambda: kept.get(slow))))
    waiter.start()
    time.sleep(0.5)  # the waiter is now behind the lock (no timing assertion: it only has to be there or not)
    first.drop()
    waiter.join(60)
    assert not waiter.is_alive()
    assert got == ["VMware ESXi 7.0.3 build-1"], got
    assert kept.value == "VMware ESXi 7.0.3 build-1"


def _catch(fn):
    try:
        return fn()
    except BaseException as err:  # noqa: BLE001 - reported as the value
        return "ERROR %s: %s" % (type(err).__name__, err)


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.5])
def test_a_question_dropped_as_it_finishes_never_keeps_a_wrong_or_half_answer(delay):
    """A question whose command ends about when it is dropped: the Kept value is either the whole answer
    or nothing, and a later caller gets the whole answer."""
    from hotvcb.background import Ahead, Kept
    from hotvcb.localshell import LocalShell
    kept, shell = Kept(), LocalShell()
    line = "VMware ESXi 7.0.3 build-%s" % ("9" * 200)

    def ask():
        return shell.run(["sh", "-c", "sleep 0.2; printf '%s\\n'" % line], interruptible=False).output.strip()

    a = Ahead(lambda: kept.get(ask), "q")
    time.sleep(delay)
    a.drop()
    assert kept.value in (None, line)
    assert kept.get(ask) == line


def test_the_kept_release_line_is_never_half_written(tmp_path):
    """hosts/esxi_release keeps `vmware -v`'s line on the ramdisk; a run killed while writing it (or a
    dropped question) must never leave a partial line that the next run trusts."""
    from hotvcb.hosts import esxi_release
    from hotvcb.localshell import LocalShell

    class Shell(LocalShell):
        def run(self, argv, **kw):
            return super().run(["printf", "VMware ESXi 7.0.3 build-21930508\\n"], **kw)

    shell = Shell()
    run_dir = str(tmp_path)
    assert esxi_release.release(shell, run_dir)[0] == "VMware ESXi 7.0.3 build-21930508"
    kept = tmp_path / esxi_release.KEPT_NAME
    assert kept.read_text() == "VMware ESXi 7.0.3 build-21930508\n"
    kept.write_text("VMware ESXi 7.0")  # a half-written line, as a plain write cut short would leave
    line, _ = esxi_release.release(shell, run_dir)
    assert line == "VMware ESXi 7.0.3 build-21930508", line


# --- backups with a hung or slow look-ahead -----------------------------------------------------------------
def _tree(pid):
    """pid and its descendants (to end a held run's whole tree, which the esxisim shell does not pass on)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _end(p):
    for pid in _tree(p.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return p.communicate(timeout=30)[0]


def _left_after_exit(pids):
    """The pids still running 10 s after hotvcb exited (a stop sent just before its exit may take a moment
    to land; one never sent leaves the hung command for its 300 s)."""
    try:
        wait_for(lambda: not _alive(pids), timeout=10, what="the hung question to end")
    except AssertionError:
        pass
    return _alive(pids)


def _alive(pids):
    return [p for p in pids if _running(p)]


def _hang_vimcmd(host, tmp_path, verb, vmid):
    hung = tmp_path / "hung"
    wrap_tool(host, "vim-cmd", 'if [ "$1" = %s ] && [ "$2" = %s ]; then echo $$ >> %s; exec sleep 300; fi'
              % (shlex.quote(verb), shlex.quote(vmid), shlex.quote(str(hung))))
    return hung


def _unwrap(host, tool="vim-cmd", layer="usr_bin"):
    """The host's real tool back, so that the test's own look at the host does not hang."""
    path = host.store.p("root", layer, "upper", tool)
    if os.path.exists(path + ".real"):
        os.rename(path + ".real", path)


def _pids(hung):
    return [int(p) for p in hung.read_text().split()] if hung.exists() else []


@needs_root
# The hung vim-cmd outlived hotvcb after the SIGTERM (alpha's power.getstate: every run seen; beta's in its
# own turn: most runs; snapshot.get: some): Lookahead.take forgot both questions before waiting on them, so
# the one not waited on was never ended. It now drops both when a wait is interrupted.
@pytest.mark.parametrize("vm,verb", [
    ("alpha", "vmsvc/snapshot.get"),
    ("alpha", "vmsvc/power.getstate"),
    ("beta", "vmsvc/snapshot.get"),
    ("beta", "vmsvc/power.getstate"),
    ("beta after alpha", "vmsvc/snapshot.get"),
    ("beta after alpha", "vmsvc/power.getstate"),
])
def test_sigterm_while_the_next_vms_look_ahead_hangs(host, tmp_path, verb, vm):
    """-a of three VMs; beta's look-ahead question (asked while alpha copies), or alpha's (asked beside the
    run's own), hangs. SIGTERM once it hangs: the run ends with 2, no snapshot of ours on any VM, the lock
    freed, and the hung vim-cmd not left running after hotvcb exits."""
    ids = {n: host.create_vm(n, "datastore1", [{"size": "4M"}], power="on") for n in ("alpha", "beta", "gamma")}
    host.set_fault("clone.delay", 3)
    host.set_fault("clone.match", "alpha")
    after = vm.endswith(" after alpha")  # SIGTERM once alpha is done: beta's own turn waits for the answer
    vm = vm.split()[0]
    hung = _hang_vimcmd(host, tmp_path, verb, ids[vm])
    run = hotvcb_background(host, "backup", "-a", "-g", write_conf(host), "-w", tmp_path / "work")
    pids = []
    try:
        wait_for(lambda: _pids(hung) and (not after or sealed(host, "alpha")), timeout=80,
                 what=vm + "'s question to hang")
        pids = _pids(hung)
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=70)
        left = _left_after_exit(pids)
    finally:
        if run.poll() is None:
            _end(run)
        for p in _alive(_pids(hung)):
            os.kill(p, signal.SIGKILL)
        _unwrap(host)
    assert "Traceback" not in out, out
    assert left == [], (left, out)
    assert run.returncode == 2, (run.returncode, out)
    assert all(ours(host, v) == [] for v in ids.values()), out
    assert lock_pid(host) is None, out


@needs_root
def test_a_run_whose_last_vm_is_done_while_a_slow_look_ahead_answer_is_late_finishes_cleanly(host, tmp_path):
    """beta's power state is slow (4 s), not hung: the run must wait for it, back up all, exit 0, and
    leave no vim-cmd running."""
    ids = {n: host.create_vm(n, "datastore1", [{"size": "4M"}], power="on") for n in ("alpha", "beta")}
    slow = tmp_path / "slow"
    wrap_tool(host, "vim-cmd", 'if [ "$1" = vmsvc/power.getstate ] && [ "$2" = %s ]; then echo $$ >> %s; '
              'sleep 4; fi' % (shlex.quote(ids["beta"]), shlex.quote(str(slow))))
    r = hotvcb(host, "backup", "-a", "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert _alive(_pids(slow)) == [], out
    assert all(len(sealed(host, n)) == 1 for n in ids), out
    assert all(ours(host, v) == [] for v in ids.values()), out


@needs_root
def test_a_run_failing_at_its_start_while_the_first_vms_questions_hang_ends_promptly(host, tmp_path):
    """The first VM's snapshot list is asked beside the run's own questions; the datastore listing fails
    (hostd busy): the run fails (1) without waiting for the hung question, and leaves it not running."""
    vmid = host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    hung = tmp_path / "hung"
    wrap_tool(host, "vim-cmd",
              'if [ "$1" = vmsvc/snapshot.get ]; then echo $$ >> %s; exec sleep 300; fi\n'
              'if [ "$1" = hostsvc/datastore/listsummary ]; then echo "(vim.fault.GenericVmConfigFault) {"; '
              'echo "   msg = \\"hostd is busy\\""; echo "}"; exit 0; fi' % shlex.quote(str(hung)))
    p = hotvcb_background(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    try:
        out = p.communicate(timeout=80)[0]
    except subprocess.TimeoutExpired:
        out = "HELD: still running after 80 s\n" + _end(p)
    finally:
        pids = _pids(hung)
        left = _alive(pids)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        _unwrap(host)
    assert "HELD" not in out, out
    assert p.returncode == 1 and "Traceback" not in out, (p.returncode, out)
    assert left == [], "hung snapshot.get outlived the run: %s\n%s" % (left, out)
    assert ours(host, vmid) == [] and not backups(host, "alpha") and lock_pid(host) is None, out


@needs_root
def test_a_restore_failing_its_pre_check_while_its_listing_and_free_space_hang(host, tmp_path):
    """The restore's early questions (getallvms, the target's free space: asked ahead) hang; the first
    pre-check, before either answer is needed, fails (the backup named is not there): the restore ends
    well within their timeouts, leaves neither running, writes nothing."""
    host.create_vm("alpha", "datastore1", [{"size": "4M"}], power="on")
    r = hotvcb(host, "backup", "-m", "alpha", "-g", write_conf(host), "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    backup = "/vmfs/volumes/backup/hotvcb/alpha/" + sealed(host, "alpha")[0]
    hung = tmp_path / "hung"
    wrap_tool(host, "vim-cmd", 'case "$1" in vmsvc/getallvms|hostsvc/datastore/info|hostsvc/datastore/listsummary) echo $$ >> %s; '
              'exec sleep 300;; esac' % shlex.quote(str(hung)))
    p = hotvcb_background(host, "restore", backup + "-gone", "--datastore", "datastore1", "--name", "beta")
    try:
        out = p.communicate(timeout=80)[0]
    except subprocess.TimeoutExpired:
        out = "HELD: still running after 80 s\n" + _end(p)
    finally:
        left = _alive(_pids(hung))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        _unwrap(host)
    assert "HELD" not in out, out
    assert p.returncode == 6 and "Traceback" not in out and "-gone" in out, (p.returncode, out)
    assert left == [], "a hung question outlived the restore: %s\n%s" % (left, out)
    assert sorted(os.listdir(host.real("/vmfs/volumes/datastore1"))) == ["alpha"], out


# --- sparse chains made by qemu-img -------------------------------------------------------------------------
@needs_qemu_img
def test_a_three_deep_sparse_chain_beside_itself_passes(tmp_path):
    _sparse(tmp_path, "a.vmdk")
    _sparse(tmp_path, "b.vmdk", "a.vmdk")
    top = _sparse(tmp_path, "c.vmdk", "b.vmdk")
    assert [p for p, _t in _check(top)[1]] == [str(tmp_path / "b.vmdk"), str(tmp_path / "a.vmdk")]


@needs_qemu_img
@pytest.mark.parametrize("how", ["absolute outside", "relative up", "absolute inside"])
def test_a_sparse_parent_named_by_a_path_is_refused_cleanly(tmp_path, how):
    inner = tmp_path / "backup"
    inner.mkdir()
    _sparse(tmp_path, "other.vmdk")
    _sparse(inner, "base.vmdk")
    backing = {"absolute outside": str(tmp_path / "other.vmdk"), "relative up": "../other.vmdk",
               "absolute inside": str(inner / "base.vmdk")}[how]
    top = _sparse(inner, "top.vmdk", backing)
    with pytest.raises(HotvcbError, match="outside"):
        _check(top)


@needs_qemu_img
def test_a_sparse_parent_that_is_a_symlink_to_another_vms_disk_is_refused(tmp_path):
    inner = tmp_path / "backup"
    inner.mkdir()
    _sparse(tmp_path, "other.vmdk")
    os.symlink(str(tmp_path / "other.vmdk"), str(inner / "base.vmdk"))
    top = _sparse(inner, "top.vmdk", "base.vmdk")
    with pytest.raises(HotvcbError):
        _check(top)


@needs_qemu_img
def test_a_sparse_chain_that_loops_is_one_error(tmp_path):
    _sparse(tmp_path, "a.vmdk")
    _sparse(tmp_path, "b.vmdk", "a.vmdk")
    # a's embedded hint rewritten to b: a -> b -> a
    top = str(tmp_path / "b.vmdk")
    a = tmp_path / "a.vmdk"
    b_head = (tmp_path / "b.vmdk").read_bytes()[:65536]
    a.write_bytes(b_head.replace(b'parentFileNameHint="a.vmdk"', b'parentFileNameHint="b.vmdk"')
                  + (tmp_path / "a.vmdk").read_bytes()[65536:])
    with pytest.raises(HotvcbError, match="loops"):
        _check(top)


@needs_qemu_img
def test_an_embedded_descriptor_straddling_64_kib_is_refused_not_read_short(tmp_path):
    """descriptorOffset/Size put the descriptor across the 64 KiB mark, its outside hint past it: read short,
    the hint would be missed; it must be refused."""
    top = _sparse(tmp_path, "top.vmdk")
    data = bytearray(open(top, "rb").read())
    if len(data) < 80 << 10:
        data += bytes((80 << 10) - len(data))
    desc = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=fffffffe\ncreateType="monolithicSparse"\n'
            + "#" * 600 + '\nparentFileNameHint="/vmfs/volumes/ds/other/other.vmdk"\n\nRW 2048 SPARSE "top.vmdk"\n')
    at = 127 * 512  # sector 127 of 128: its 2 sectors straddle 64 KiB
    data[at:at + len(desc)] = desc.encode()
    struct.pack_into("<QQ", data, 28, 127, 2)
    with open(top, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(HotvcbError):
        _check(top)


@needs_qemu_img
@pytest.mark.parametrize("depth", [1, 2])
def test_kvm_restore_of_a_legitimate_sparse_chain_made_by_qemu_img_restores_its_top(tmp_path, depth):
    """A backup whose disk is a monolithicSparse top over sparse parents beside it (relative hints, as
    qemu-img writes them): the chain check must let it through and the restored disk read as the top."""
    from test_outsider_crosshv import QEMU_IMG, cli, esxi_backup, seal
    data = bytes(4096) + os.urandom((1 << 20) - 4096)
    raw = tmp_path / "data.raw"
    raw.write_bytes(data)
    real = esxi_backup(tmp_path / "vol", "sc")
    for n in ("disk.vmdk", "disk-flat.vmdk"):
        os.unlink(os.path.join(real, n))
    names = ["base%d.vmdk" % i for i in range(depth)] + ["disk.vmdk"]
    subprocess.run([QEMU_IMG, "convert", "-q", "-O", "vmdk", "-f", "raw", str(raw), os.path.join(real, names[0])],
                   check=True, timeout=60)
    for parent, child in zip(names, names[1:]):
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", parent,
                        os.path.join(real, child)], check=True, timeout=60, cwd=real)
    seal(real, "sc", [("scsi0:0", names[::-1])])
    dst = tmp_path / "out"
    dst.mkdir()
    r = cli("restore", real, "--kvm", dst, "--format", "raw")
    assert r.returncode == 0 and "Traceback" not in r.out, r.out
    found = [os.path.join(d, f) for d, _s, fs in os.walk(str(dst)) for f in fs if f.endswith((".raw", ".img"))
             or os.path.getsize(os.path.join(d, f)) == len(data)]
    assert any(open(p, "rb").read() == data for p in found), (found, r.out)


@needs_root
def test_a_look_ahead_question_that_fails_once_is_asked_again_in_its_turn(host, tmp_path):
    """beta's snapshot list, asked during alpha's copy, fails once (hostd busy): beta's own turn asks again
    and is backed up; the run exits 0 with both sealed and no snapshot of ours left."""
    ids = {n: host.create_vm(n, "datastore1", [{"size": "4M"}], power="on") for n in ("alpha", "beta")}
    mark = tmp_path / "failed-once"
    wrap_tool(host, "vim-cmd", 'if [ "$1" = vmsvc/snapshot.get ] && [ "$2" = %s ] && [ ! -e %s ]; then : > %s; '
              'echo "(vim.fault.GenericVmConfigFault) {"; echo "   msg = \\"hostd is busy\\""; echo "}"; exit 0; fi'
              % (shlex.quote(ids["beta"]), shlex.quote(str(mark)), shlex.quote(str(mark))))
    r = hotvcb(host, "backup", "-a", "-g", write_conf(host), "-w", tmp_path / "work")
    out = r.stdout + r.stderr
    assert mark.exists(), out  # it was asked, and failed
    assert r.returncode == 0 and "Traceback" not in out, out
    assert all(len(sealed(host, n)) == 1 for n in ids), out
    assert all(ours(host, v) == [] for v in ids.values()), out


def _sparse_backup_over(tmp_path, backing):
    """An ESXi-style sealed backup whose disk.vmdk is a qemu-img monolithicSparse disk over `backing` (a path
    as qemu-img writes it)."""
    from test_outsider_crosshv import QEMU_IMG, esxi_backup, seal
    real = esxi_backup(tmp_path / "vol", "sb")
    for n in ("disk.vmdk", "disk-flat.vmdk"):
        os.unlink(os.path.join(real, n))
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "vmdk", "-F", "vmdk", "-b", backing, os.path.join(real, "disk.vmdk")],
                   check=True, timeout=60, cwd=real)
    seal(real, "sb", [("scsi0:0", ["disk.vmdk"])])
    return real


@needs_qemu_img
@pytest.mark.parametrize("how", ["absolute", "relative up"])
def test_boot_check_of_a_sparse_disk_whose_parent_lies_outside_is_refused_before_qemu(tmp_path, how):
    from test_outsider_crosshv import QEMU_IMG, cli
    other = tmp_path / "other.vmdk"
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "vmdk", str(other), "1M"], check=True, timeout=60)
    os.makedirs(str(tmp_path / "vol"), exist_ok=True)
    backing = str(other) if how == "absolute" else "../../../other.vmdk"
    backup = _sparse_backup_over(tmp_path, backing)
    log = tmp_path / "console.log"
    r = cli("verify", "--boot", backup, "--boot-timeout", 15, "--console-log", log, timeout=85)
    assert "Traceback" not in r.out, r.out
    assert r.returncode == 1 and "outside the backup" in r.out, r.out
    assert not log.exists()
