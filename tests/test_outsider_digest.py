"""An outsider's attacks on the threaded block digests and the lazily imported CLI.

The digests are checked against an implementation written here from docs/backup-format.md alone
(not against hotvcb's own single-thread path), on files whose shape the reader's hole skipping,
ring of buffers and short last block could get wrong; then through the CLI on a simulated host:
damage in a hole and in a short last block is found and named, a manifest with a garbage block
size is damage (one line), not an internal error or an allocation of gigabytes; verify and the seal
stopped mid-digest by a signal, a disk truncated under the reader, a FIFO in a backup; every command
loaded alone (also from the pyz); libvirt's checkpoints of other tools, and ours deleted in between.
"""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import procs
from simhost import backup_root, backups, hotvcb, hotvcb_background, listing, make_host, needs_root, sealed, snapshot_names, write_conf

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from hotvcb import blockdigest  # noqa: E402
from kvmguest import libvirt_exclusive  # noqa: E402,F401  (the fixture)

MIB = 1 << 20
KIB = 1 << 10


def by_the_book(data: bytes, block: int = MIB) -> dict:
    """docs/backup-format.md: SHA-256 of each block's SHA-256; `blocks` = 16 hex digits of each."""
    digests = [hashlib.sha256(data[i:i + block]).digest() for i in range(0, len(data), block)]
    return {"size": len(data), "sha256_of_blocks": hashlib.sha256(b"".join(digests)).hexdigest(),
            "blocks": "".join(d.hex()[:16] for d in digests)}


def _sparse(path: Path, size: int, pieces) -> None:
    """A sparse file of `size` bytes holding `pieces` [(offset, bytes)] and holes elsewhere."""
    with open(str(path), "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)


AWKWARD = {
    "empty": lambda p: _sparse(p, 0, []),
    "one byte": lambda p: _sparse(p, 1, [(0, b"\x01")]),
    "one zero byte": lambda p: _sparse(p, 1, [(0, b"\0")]),
    "not a block multiple": lambda p: _sparse(p, 3 * MIB + 7, [(0, os.urandom(3 * MIB + 7))]),
    # a hole that starts and one that ends mid-block, data across a block edge, a short last block
    "holes mid-block": lambda p: _sparse(p, 9 * MIB + 12345, [
        (MIB // 2, os.urandom(8 * KIB)), (3 * MIB - 4 * KIB, os.urandom(12 * KIB)),
        (6 * MIB + 100 * KIB, os.urandom(MIB)), (9 * MIB + 4 * KIB, os.urandom(100))]),
    "data only in the last block": lambda p: _sparse(p, 20 * MIB + 333, [(20 * MIB + 300, b"tail" * 8)]),
    "data only in the last byte": lambda p: _sparse(p, 17 * MIB, [(17 * MIB - 1, b"\xff")]),
    # more data blocks than the ring of buffers, each holding many tiny extents between holes
    "many tiny extents": lambda p: _sparse(p, 14 * MIB + 1, [
        (off, os.urandom(16)) for off in range(0, 14 * MIB + 1, 8 * KIB)]),
    # data blocks and hole runs alternating, so that hole entries interleave with queued hashes
    "alternating": lambda p: _sparse(p, 40 * MIB, [
        (off, os.urandom(MIB)) for off in range(0, 40 * MIB, 3 * MIB)]),
    # written zeros (read, recognised as zero blocks) next to identical data blocks
    "written zeros and repeats": lambda p: _sparse(p, 12 * MIB + 5, [
        (0, bytes(4 * MIB)), (4 * MIB, b"\xab" * (4 * MIB)), (8 * MIB, bytes(4 * MIB + 5))]),
}


@pytest.mark.parametrize("shape", sorted(AWKWARD))
def test_threaded_digests_are_the_documented_digests_on_awkward_files(tmp_path, shape):
    path = tmp_path / "disk"
    AWKWARD[shape](path)
    want = by_the_book(path.read_bytes())
    for threads in (1, 2, 3, 4):
        seen = []
        with open(str(path), "rb", buffering=0) as f:
            got = blockdigest.digest_fd(f, MIB, on_block=seen.append, threads=threads)
        assert {k: got[k] for k in want} == want, (shape, threads)
        assert sum(seen) == want["size"], (shape, threads)
    # SSH mode: the module's own source run by `python -c` (hostdigest.by_command), threads and all
    src = (Path(REPO) / "hotvcb" / "blockdigest.py").read_text()
    r = subprocess.run([sys.executable, "-c", src, str(path), str(MIB), "0"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert {k: got[k] for k in want} == want, shape


def _backup(host, tmp_path, vm, disk_size="6M"):
    host.create_vm(vm, "datastore1", [{"size": disk_size}], power="on")
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, vm)
    return os.path.join(backup_root(host, vm), entry), "/vmfs/volumes/backup/hotvcb/%s/%s" % (vm, entry)


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(1) or b"\0"
        f.seek(offset)
        f.write(bytes([old[0] ^ 0x5a]))


@needs_root
def test_damage_in_a_hole_and_in_a_short_last_block_is_found_and_named(host, tmp_path):
    vm = "dig \"äö\" 'x'"
    real, folder = _backup(host, tmp_path, vm)
    flat = os.path.join(real, vm + "-flat.vmdk")
    with open(flat, "r+b") as f:  # the copy's last block becomes a hole, then one byte is written in it
        f.truncate(5 * MIB)
        f.truncate(6 * MIB)
    with open(os.path.join(real, "hotvcb.json"), encoding="utf-8") as f:
        man = json.load(f)
    with open(flat, "rb") as f:  # the manifest's entry made to describe the copy as it now is
        book = by_the_book(f.read())
    man["files"][vm + "-flat.vmdk"] = {"size": book["size"], "sha256_of_blocks": book["sha256_of_blocks"],
                                       "blocks": {"size": MIB, "hex": 16, "digests": book["blocks"]}}
    with open(os.path.join(real, "hotvcb.json"), "w", encoding="utf-8") as f:
        json.dump(man, f)
    r = hotvcb(host, "verify", folder)
    assert r.returncode == 0, r.stdout + r.stderr  # the hole reads as the zeros the manifest has
    _flip(flat, 5 * MIB + 4097)  # inside the hole
    nvram = os.path.join(real, vm + ".nvram")
    size = os.path.getsize(nvram)
    assert size % MIB, "the .nvram is a short last block"
    _flip(nvram, size - 1)
    r = hotvcb(host, "verify", folder)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "%s-flat.vmdk: SHA-256 mismatch (bytes %d-%d)" % (vm, 5 * MIB, 6 * MIB - 1) in out, out
    assert "%s.nvram: SHA-256 mismatch (bytes 0-%d)" % (vm, size - 1) in out, out
    assert "Traceback" not in out


@needs_root
def test_garbage_block_digests_in_the_manifest_are_damage_in_one_line(host, tmp_path):
    """A manifest is input: a block size no hotvcb writes (edited, or from a hostile copy) must be
    reported as a damaged entry, not end verify in an internal error, nor make the threaded reader
    allocate its ring of (2 x threads + 2) buffers of that size; block digests that are not text
    must not hide which file is damaged."""
    vm = "garbage-bs"
    real, folder = _backup(host, tmp_path, vm, "2M")
    path, vmx = os.path.join(real, "hotvcb.json"), os.path.join(real, vm + ".vmx")
    with open(path, encoding="utf-8") as f:
        sealed_manifest = f.read()
    with open(vmx, "rb") as f:
        sealed_vmx = f.read()
    for field, value in [("size", -1), ("size", "x"), ("size", [1]), ("size", 1 << 40), ("size", 1 << 27),
                         ("digests", 5)]:
        man = json.loads(sealed_manifest)
        man["files"][vm + ".vmx"]["blocks"][field] = value
        with open(path, "w", encoding="utf-8") as f:
            json.dump(man, f)
        with open(vmx, "wb") as f:
            f.write(sealed_vmx)
        if field == "digests":  # they only locate damage: there must be some
            _flip(vmx, 10)
        r = hotvcb(host, "verify", folder)
        out = r.stdout + r.stderr
        assert r.returncode == 6, (field, value, out)  # all (one) damaged; 1 would be an internal error's
        assert "internal error" not in out and "Traceback" not in out, out
        assert "first: %s.vmx: " % vm in out and ("block size %.40r is not" % value in out or field != "size"), out
    [b] = listing(host, write_conf(host), vm)
    assert b["status"] != "ok", b


@needs_root
def test_a_compressed_backups_manifest_with_blocks_that_are_no_table_is_damage_in_one_line(host, tmp_path):
    """A .gz is verified by streaming its members and comparing them with the manifest inside: an entry
    whose "blocks" is not a table must make the manifest unreadable (damage), not an internal error."""
    vm = "gz-garbage"
    host.create_vm(vm, "datastore1", [{"size": "2M"}], power="on")
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host, ENABLE_COMPRESSION=1), "-w", tmp_path / "w")
    assert r.returncode == 0, r.stdout + r.stderr
    [gz] = [b for b in backups(host, vm) if b.endswith(".gz")]
    path = os.path.join(backup_root(host, vm), gz)
    with tarfile.open(path) as t:
        members = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        for m, data in members:
            if m.name.endswith("/hotvcb.json"):
                man = json.loads(data)
                man["files"][vm + ".vmx"]["blocks"] = "zz"
                data = json.dumps(man).encode()
                m.size = len(data)
            t.addfile(m, io.BytesIO(data) if data is not None else None)
    with open(path, "wb") as f:
        f.write(out.getvalue())
    r = hotvcb(host, "verify", "/vmfs/volumes/backup/hotvcb/%s/%s" % (vm, gz))
    out = r.stdout + r.stderr
    assert r.returncode == 6, out
    assert "manifest unreadable" in out and "internal error" not in out and "Traceback" not in out, out


@needs_root
def test_a_fifo_or_a_device_where_a_backups_file_was_is_damage_not_a_hang(host, tmp_path):
    """The digest opened every named file as it found it: a FIFO blocked open() for ever (and, with the
    signal handlers installed, SIGTERM could not end it: the open is retried); a device is no file."""
    vm = "fifo"
    real, folder = _backup(host, tmp_path, vm, "2M")
    os.unlink(os.path.join(real, vm + ".nvram"))
    os.mkfifo(os.path.join(real, vm + ".nvram"))
    os.unlink(os.path.join(real, vm + ".vmdk"))
    os.symlink("/dev/zero", os.path.join(real, vm + ".vmdk"))
    r = hotvcb(host, "verify", folder, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 6, out
    # health's verdict, which verify gives first (as list does): both counted, the first named with what it is
    name = vm + ".nvram"
    assert "2 file(s) named in the manifest are missing, first %s: unreadable: cannot read %s/%s: not a regular " \
        "file" % (name, folder, name) in out, out


COMMANDS = ("backup", "cleanup", "schedule", "restore", "list", "verify", "status", "prune")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hotvcb"] + list(args), capture_output=True, text=True,
                          timeout=60, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))


def test_every_command_loads_alone_and_the_parser_still_knows_them_all():
    """The CLI imports only the given command's module: each must load, register and parse by itself,
    also behind global options; an unknown command or none is still told in one usage line."""
    for i, cmd in enumerate(COMMANDS):
        for argv in ([cmd, "--help"] if i % 2 else ["--qemu", "/nonexistent", cmd, "--help"],):
            r = _cli(*argv)
            assert r.returncode == 0 and "usage: hotvcb %s" % cmd in r.stdout, (argv, r.stdout, r.stderr)
    r = _cli("--qemu", "/nonexistent", "bogus")
    assert r.returncode == 1 and "invalid choice: 'bogus'" in r.stderr, r.stderr
    assert all(cmd in r.stderr for cmd in COMMANDS) and "Traceback" not in r.stderr, r.stderr
    r = _cli()
    assert r.returncode == 1 and all(cmd in r.stdout for cmd in COMMANDS), r.stdout + r.stderr


def test_every_command_loads_alone_from_the_pyz_with_the_oldest_python(tmp_path):
    """Each command's module is imported by name when given (importlib), from a zip too: the pyz run with
    `python -m hotvcb` (PYTHONPATH=the pyz) and as a file, on 3.8 where this machine has it."""
    from qemuvm import PYTHON

    pyz = tmp_path / "hotvcb.pyz"
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "build-pyz"), "-o", str(pyz)], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for cmd in COMMANDS:
        argv, env = ([PYTHON, "-m", "hotvcb"], dict(alone, PYTHONPATH=str(pyz))) if cmd != "verify" else \
            ([PYTHON, str(pyz)], alone)
        r = subprocess.run(argv + [cmd, "--help"], capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                           env=env)
        assert r.returncode == 0 and "usage: hotvcb %s" % cmd in r.stdout, (argv, cmd, r.stderr)


def _hotvcb_pid(marker: str):
    """The pid of the python running hotvcb with `marker` among its arguments (inside esxisim's shell)."""
    for pid, argv in procs.argvs():
        if b"hotvcb" in argv and marker.encode() in argv and b"shell" not in argv:
            return pid
    return None


def _reading(pid: int, name: str) -> bool:
    try:
        return any(os.readlink("/proc/%d/fd/%s" % (pid, fd)).endswith(name) for fd in os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return False


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """One sealed backup of a VM whose 160 MiB disk is data in every block (verify reads and hashes it
    all), shared by the attacks that stop hotvcb mid-digest: (host, vm, real folder, host folder, vmid)."""
    if os.geteuid() != 0:
        pytest.skip("esxisim needs root for unshare -m")
    root = tmp_path_factory.mktemp("big")
    host = make_host(root / "host")
    try:
        vm = "mid digest"
        vmid = host.create_vm(vm, "datastore1", [{"size": "160M"}])
        [(_node, src, _mode)] = host.vm_disks(vmid)
        with open(host.real(src)[:-len(".vmdk")] + "-flat.vmdk", "r+b") as f:
            f.write(os.urandom(160 * MIB))
        r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host), "-w", root / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        [entry] = sealed(host, vm)
        yield (host, vm, os.path.join(backup_root(host, vm), entry),
               "/vmfs/volumes/backup/hotvcb/%s/%s" % (vm, entry), vmid)
    finally:
        host.stop()


def _verify_stopped_mid_digest(host, folder: str, disk: str, then, *argv):
    """Run verify on `folder` (or hotvcb with `argv`), stop it (SIGSTOP) while it has `disk` open, call
    then(pid), let it go on: (exit code, output, seconds it took from there)."""
    proc = hotvcb_background(host, *(argv or ("verify", folder)))
    try:
        deadline = time.monotonic() + 30
        pid = None
        while time.monotonic() < deadline:
            pid = pid or _hotvcb_pid(folder)
            if pid and _reading(pid, disk):
                os.kill(pid, signal.SIGSTOP)
                break
            time.sleep(0.002)
        else:
            pytest.fail("verify never read the disk")
        then(pid)
        os.kill(pid, signal.SIGCONT)
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        return proc.returncode, out, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_digest_stops_verify_at_once_and_records_nothing(big, sig):
    """Verify stopped (SIGSTOP) while its threads digest a disk, sent the signal, continued: it must end
    promptly with the interrupt's exit code in one line, and neither pass nor damn the backup."""
    host, vm, real, folder, _vmid = big
    with open(os.path.join(real, "hotvcb.json"), "rb") as f:
        before = f.read()
    code, out, stopped = _verify_stopped_mid_digest(host, folder, vm + "-flat.vmdk", lambda pid: os.kill(pid, sig))
    assert code == 2, out
    assert "hotvcb: interrupted by %s" % sig.name in out and "Traceback" not in out, out
    assert stopped < 5, "verify took %.1f s to stop" % stopped
    with open(os.path.join(real, "hotvcb.json"), "rb") as f:
        assert f.read() == before, "an interrupted verify recorded a result"


def test_a_disk_truncated_while_verify_digests_it_is_damage(big):
    """The reader knew the file's size and data extents before it read: a file cut short under it must
    come out damaged (its new size named), never as the sealed size with the lost tail passing."""
    host, vm, real, folder, _vmid = big
    second = "%02d" % ((int(real[-2:]) + 1) % 60)  # a second backup of the VM, a copy of the first
    shutil.copytree(real, real[:-2] + second)
    flat = os.path.join(real[:-2] + second, vm + "-flat.vmdk")
    code, out, _ = _verify_stopped_mid_digest(host, folder[:-2] + second, vm + "-flat.vmdk",
                                              lambda pid: os.truncate(flat, 100 * MIB + 3))
    assert code not in (0, 1, 2), out
    assert "%s-flat.vmdk: size %d, manifest says %d" % (vm, 100 * MIB + 3, 160 * MIB) in out, out
    assert "Traceback" not in out and "internal error" not in out, out


def test_a_sigterm_while_the_seal_digests_a_copy_leaves_no_backup_that_looks_complete(big, tmp_path):
    """A 2gbsparse copy is digested from the copy by the seal (threads): SIGTERM there must end the run
    interrupted (exit 2), with no STATUS.ok, no -partial folder, no snapshot, the VM still on."""
    host, vm, _real, _folder, vmid = big
    host.power_on(vmid)
    before = sealed(host, vm)
    conf = write_conf(host, "sparse.conf", DISK_BACKUP_FORMAT="2gbsparse")
    marker = str(tmp_path / "w")
    code, out, stopped = _verify_stopped_mid_digest(
        host, marker, "-s001.vmdk", lambda pid: os.kill(pid, signal.SIGTERM),
        "backup", "-m", vm, "-g", conf, "-w", marker)
    assert code == 2, out
    assert "Traceback" not in out and stopped < 10, out
    assert "sealing the backup failed: interrupted by SIGTERM" in out, out  # it was stopped mid-seal
    assert sealed(host, vm) == before, out
    assert not [b for b in backups(host, vm) if b.endswith("-partial")], backups(host, vm)
    assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"


# -- libvirt: other tools' checkpoints with odd names, listed once (hosts/virsh.py) ----------------------
DOM = "dg ck \"ü'"


@pytest.fixture(scope="module")
def bare_domain(request):
    """A running libvirt domain without an OS (SeaBIOS finds nothing to boot and waits): its qcow2 disk
    holds data written here, enough for block-level backups. Yields (virsh, run)."""
    kvmguest = pytest.importorskip("kvmguest")
    if kvmguest.available() is not None:
        pytest.skip(kvmguest.available())
    from qemuvm import PYTHON, env

    request.getfixturevalue("libvirt_exclusive")
    virsh = kvmguest.virsh
    root = kvmguest.scratch("hvdg")
    disk = kvmguest.random_qcow2(os.path.join(root, "the disk.src"), os.path.join(root, "the disk.qcow2"), 8 * MIB)
    xml = os.path.join(root, "domain.xml")
    with open(xml, "w") as f:
        f.write(kvmguest.domain_xml(DOM.replace("'", "&apos;").replace('"', "&quot;"), disk, "qcow2",
                                    os.path.join(root, "console.log"), agent=False))
    kvmguest.define(xml, DOM)
    os.makedirs(os.path.join(root, "backups"))
    conf = kvmguest.write_conf(root, os.path.join(root, "backups"))

    def run(*args, bin_dir=None):
        r = subprocess.run([PYTHON, "-m", "hotvcb", "--libvirt", "qemu:///system", "backup", "-g", conf,
                            "-w", os.path.join(root, "work")] + list(args), capture_output=True, text=True,
                           timeout=120, env=env(bin_dir))
        return r.returncode, r.stdout + r.stderr

    try:
        virsh("start", DOM)
        yield virsh, run
    finally:
        kvmguest.undefine(DOM)
        kvmguest.remove_scratch(root)


def test_other_tools_checkpoints_with_odd_names_are_neither_used_nor_touched(bare_domain):
    """checkpoint-list --name is read as one name a line: other tools' checkpoints, before and after ours
    (one holding our mark inside its name), must not be taken for ours, deleted, or break the incremental
    of a domain whose name has a space, quotes and an umlaut."""
    virsh, run = bare_domain
    def names():
        return [n.strip() for n in virsh("checkpoint-list", DOM, "--name", "--topological").stdout.splitlines()
                if n.strip()]
    first, later = "other-tool.1", "zz_later-hotvcb-snapshot-x"  # (libvirt refuses spaces, quotes, umlauts)
    virsh("checkpoint-create-as", DOM, first)
    code, out = run("-m", DOM)
    assert code == 0 and "no checkpoint of ours to start from: a full backup" in out, out
    ours = [n for n in names() if n.startswith("hotvcb-")]
    assert len(ours) == 1 and first in names(), names()
    virsh("checkpoint-create-as", DOM, later)
    # a backup begun in the same second as ours would find its checkpoint's name taken and make a full one
    time.sleep(1 - time.time() % 1)
    code, out = run("-m", DOM)
    assert code == 0 and "is incremental on" in out, out
    now = names()
    assert first in now and later in now, now
    assert len([n for n in now if n.startswith("hotvcb-")]) == 1 and ours[0] not in now, now


def test_our_checkpoint_deleted_between_its_listing_and_backup_begin_means_a_full_backup(bare_domain, tmp_path):
    """Checkpoints are listed once, then used: one deleted by hand (or another tool) in between must make
    the run fall back to a full backup in one log line, with exactly one checkpoint of ours after it."""
    virsh, run = bare_domain
    real = shutil.which("virsh")
    (tmp_path / "virsh").write_text(
        '#!/bin/sh\nif [ "$4" = backup-begin ] && [ ! -e %s/done ]; then touch %s/done\n'  # -q -c URI VERB DOMAIN
        '  %s -q -c qemu:///system checkpoint-list "$5" --name | grep "^hotvcb-" | while read c; do\n'
        '    %s -q -c qemu:///system checkpoint-delete "$5" "$c" >/dev/null; done\nfi\nexec %s "$@"\n'
        % (tmp_path, tmp_path, real, real, real))
    (tmp_path / "virsh").chmod(0o755)
    code, out = run("-m", DOM)  # a base with our checkpoint, whatever ran before
    assert code == 0, out
    code, out = run("-m", DOM, bin_dir=str(tmp_path))
    assert (tmp_path / "done").exists(), out
    assert code == 0 and "a full backup instead" in out and "Traceback" not in out, out
    ours = [n for n in virsh("checkpoint-list", DOM, "--name").stdout.split() if n.startswith("hotvcb-")]
    assert len(ours) == 1, ours
