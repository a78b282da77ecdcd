"""An outsider's attacks on qcow2 backups proven by their content (manifest version 3).

A backup folder is made as the seal makes it (a qcow2 written by `qemu-img convert`, its content
entry digested independently from the raw source), then its image is damaged by hand: tables that
point into the header, at each other, outside the file, flags and sizes out of range, a truncated or
grown file, a symlink or FIFO in its place, a backing file. Every damage that changes the disk must
make verify say "damaged" naming the disk in one line, never a traceback, never a hang; damage that
leaves the disk alone (refcounts, the dirty bit) must not. Then, through the CLI against a real QEMU
VM: sources of odd sizes and small clusters, a damaged backup restored, a damaged `.gz`, old
manifests, a manifest from the future.
"""

import glob
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tarfile
import time

import pytest

from qemuvm import PYTHON, QEMU_IMG, env, hotvcb_argv, qemu_img as run_qemu_img, same_content
from test_qemu_backup import _image, lab  # noqa: F401  (the fixture)

from hotvcb import qcow2
from hotvcb.jobs.verify import verify_folder, verify_gz
from hotvcb.localshell import LocalShell
from hotvcb.store import manifest, sidecar

pytestmark = pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img (qemu-utils)")
MIB = 1 << 20
DISK = "VM.qcow2"


def qemu_img(*args):
    done = run_qemu_img(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def raw_source(path, size=6 * MIB):
    """A raw disk: patterned data in the first and third MiB and at the end, zeros between."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(0)
        f.write(b"".join(hashlib.sha256(struct.pack(">I", i)).digest() for i in range(MIB // 32)))  # no two alike
        f.seek(2 * MIB + 4096)
        f.write(b"\x5a" * (MIB - 8192))
        f.seek(size - 512)
        f.write(b"\xee" * 512)
    return path


def make_backup(tmp_path, options=(), manifest_version=None):
    """A sealed folder as the seal writes it: the qcow2 is qemu-img's copy of a raw source, the
    content entry the digest of that source (not of the copy: an independent witness)."""
    src = raw_source(str(tmp_path / "source.raw"))
    folder = tmp_path / "vol" / "VM" / "VM-2026-12-02_12-00-00"
    folder.mkdir(parents=True)
    disk = str(folder / DISK)
    qemu_img("convert", "-f", "raw", "-O", "qcow2", *options, src, disk)
    (folder / "VM.json").write_text("{}\n")
    shell = LocalShell()
    content = manifest.digest_file(shell, src).entry()
    files = {"VM.json": manifest.digest_file(shell, str(folder / "VM.json")).entry(),
             DISK: {"size": os.path.getsize(disk), "content": dict(content, format="qcow2")}}
    disks = [{"key": "drive0", "source": src, "files": [DISK], "ok": True, "error": ""}]
    (folder / manifest.MANIFEST).write_text(manifest.dumps({"vm": "VM", "result": "ok", "disk_format": "qcow2",
                                                            "disks": disks, "files": files}))
    (folder / "STATUS.ok").write_text("ok\n")
    return shell, str(folder), disk


def header(path):
    with open(path, "rb") as f:
        head = f.read(104)
    cluster = 1 << struct.unpack(">I", head[20:24])[0]
    l1_offset = struct.unpack(">Q", head[40:48])[0]
    refcount_offset = struct.unpack(">Q", head[48:56])[0]
    return cluster, l1_offset, refcount_offset


def u64(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(">Q", f.read(8))[0]


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def l2_entries(path):
    """[(file offset of the entry, value)] of the allocated L2 entries under L1 entry 0."""
    cluster, l1, _ = header(path)
    l2 = u64(path, l1) & 0x00FFFFFFFFFFFE00
    with open(path, "rb") as f:
        f.seek(l2)
        table = struct.unpack(">%dQ" % (cluster // 8), f.read(cluster))
    return l2, [(l2 + 8 * i, e) for i, e in enumerate(table) if e & 0x00FFFFFFFFFFFE00]


def set_l2(path, index, value):
    _l2, entries = l2_entries(path)
    poke(path, entries[index][0], struct.pack(">Q", value))


COPIED = 1 << 63


def swap_two_clusters(p):
    _l2, entries = l2_entries(p)
    (a, va), (b, vb) = entries[0], entries[-1]
    poke(p, a, struct.pack(">Q", vb))
    poke(p, b, struct.pack(">Q", va))


def l1_at_itself(p):
    _c, l1, _r = header(p)
    poke(p, l1, struct.pack(">Q", COPIED | l1))


def l1_at_header(p):
    _c, l1, _r = header(p)
    poke(p, l1, struct.pack(">Q", COPIED | 0))  # a zero offset: read as unallocated, the data is gone


def l1_outside(p):
    _c, l1, _r = header(p)
    poke(p, l1, struct.pack(">Q", COPIED | (1 << 40)))


def l2_at_own_table(p):
    l2, _e = l2_entries(p)
    set_l2(p, 0, COPIED | l2)


def l2_at_l1(p):
    set_l2(p, 0, COPIED | header(p)[1])


def l2_at_refcounts(p):
    set_l2(p, 0, COPIED | header(p)[2])


def l2_at_header_cluster(p):
    set_l2(p, 0, COPIED | 512)  # inside cluster 0, not aligned


def l2_zero_flag(p):
    _l2, entries = l2_entries(p)
    set_l2(p, 0, entries[0][1] | 1)


def l2_zero_flag_v2(p):
    _l2, entries = l2_entries(p)
    poke(p, 4, struct.pack(">I", 2))  # a version-2 header has no zero flag
    set_l2(p, 0, entries[0][1] | 1)


def l2_compressed(p):
    _l2, entries = l2_entries(p)
    set_l2(p, 0, (entries[0][1] & ~COPIED) | 1 << 62)


def l2_unallocated(p):
    set_l2(p, 0, 0)


def l2_past_eof_by_a_cluster(p):
    size = os.path.getsize(p)
    cluster = header(p)[0]
    set_l2(p, 0, COPIED | (size + cluster - size % cluster))


def l2_the_same_cluster_twice(p):
    _l2, entries = l2_entries(p)
    set_l2(p, 1, entries[0][1])


def backing_file(p):
    poke(p, 8, struct.pack(">QI", 1024, 8))  # backing file name "/etc/xx" at offset 1024 (inside cluster 0)
    poke(p, 1024, b"/dev/sda")


def cluster_bits(bits):
    return lambda p: poke(p, 20, struct.pack(">I", bits))


def virtual_size(size):
    return lambda p: poke(p, 24, struct.pack(">Q", size))


def l1_entries(n):
    return lambda p: poke(p, 36, struct.pack(">I", n))


def incompatible(bits):
    return lambda p: poke(p, 72, struct.pack(">Q", bits))


def flip_data(p):
    _l2, entries = l2_entries(p)
    off = entries[-1][1] & 0x00FFFFFFFFFFFE00
    with open(p, "r+b") as f:
        f.seek(off + 77)
        b = f.read(1)
        f.seek(off + 77)
        f.write(bytes([b[0] ^ 0x01]))


def encrypted(p):
    poke(p, 32, struct.pack(">I", 1))


@pytest.mark.parametrize("damage", [
    swap_two_clusters, l1_at_itself, l1_at_header, l1_outside, l2_at_own_table, l2_at_l1, l2_at_refcounts,
    l2_at_header_cluster, l2_zero_flag, l2_zero_flag_v2, l2_compressed, l2_unallocated, l2_past_eof_by_a_cluster,
    l2_the_same_cluster_twice, backing_file, cluster_bits(8), cluster_bits(17), cluster_bits(22), cluster_bits(0),
    virtual_size(1 << 61), virtual_size((1 << 64) - 1), virtual_size(6 * MIB - 512), virtual_size(6 * MIB + 1),
    l1_entries(0), l1_entries(0xFFFFFFFF), incompatible(1 << 1), incompatible(1 << 2), incompatible(1 << 63),
    flip_data, encrypted,
], ids=lambda f: getattr(f, "__name__", "x"))
def test_damage_to_the_image_is_damage_naming_the_disk_in_one_line(tmp_path, damage):
    shell, folder, disk = make_backup(tmp_path)
    assert verify_folder(shell, folder, record=False).status == "ok"
    size = os.path.getsize(disk)
    damage(disk)
    assert os.path.getsize(disk) == size  # the size check alone cannot find it: the content must
    started = time.monotonic()
    res = verify_folder(shell, folder, record=False)
    assert time.monotonic() - started < 20
    assert res.status == "damaged" and DISK in res.message and "\n" not in res.message, res.message


def test_damage_through_the_cli_is_one_line_exit_nonzero_and_recorded(tmp_path):
    shell, folder, disk = make_backup(tmp_path)
    l2_at_l1(disk)
    r = subprocess.run([PYTHON, "-m", "hotvcb", "verify", folder], capture_output=True, text=True, timeout=60,
                       env=env())
    out = r.stdout + r.stderr
    assert r.returncode != 0 and DISK in out and "Traceback" not in out, out
    data = json.loads(open(os.path.join(folder, manifest.MANIFEST)).read())
    assert data.get("verify_error") and data["version"] == 3, data
    r = subprocess.run([PYTHON, "-m", "hotvcb", "list", "--volume", str(tmp_path / "vol"), "VM"], capture_output=True,
                       text=True, timeout=60, env=env())
    assert "damaged" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("harmless", ["refcounts", "dirty", "snapshot-free-junk-cluster"])
def test_what_leaves_the_disk_alone_still_verifies(tmp_path, harmless):
    """Refcounts are never read, the dirty bit is readable: the disk is unchanged and provable."""
    shell, folder, disk = make_backup(tmp_path)
    _c, _l1, refcounts = header(disk)
    if harmless == "refcounts":
        block = u64(disk, refcounts) & 0x00FFFFFFFFFFFE00
        poke(disk, block, b"\xff" * 64)
    elif harmless == "dirty":
        poke(disk, 72, struct.pack(">Q", 1))
    else:  # junk in the header's unused tail (after the extensions' end marker)
        poke(disk, 4096 - 16, b"junk junk junk!!")
    res = verify_folder(shell, folder, record=False)
    assert res.status == "ok", res.message


@pytest.mark.parametrize("how", ["truncated mid-cluster", "junk appended", "emptied", "a directory"])
def test_a_file_cut_grown_or_replaced_is_damage(tmp_path, how):
    shell, folder, disk = make_backup(tmp_path)
    if how == "truncated mid-cluster":
        os.truncate(disk, os.path.getsize(disk) - 1000)
    elif how == "junk appended":
        with open(disk, "ab") as f:
            f.write(b"junk" * 100)
    elif how == "emptied":
        open(disk, "wb").close()
    else:
        os.unlink(disk)
        os.mkdir(disk)
    res = verify_folder(shell, folder, record=False)
    assert res.status == "damaged" and DISK in res.message and "\n" not in res.message, res.message


def test_a_truncated_file_with_its_manifest_size_edited_is_still_damage(tmp_path):
    """Cut a cluster off the end and fix the size in the manifest: the content tells."""
    shell, folder, disk = make_backup(tmp_path)
    _l2, entries = l2_entries(disk)
    last = max(e & 0x00FFFFFFFFFFFE00 for _, e in entries)
    os.truncate(disk, last + 100)  # the last data cluster cut mid-way: read as zeros past the end
    path = os.path.join(folder, manifest.MANIFEST)
    data = json.loads(open(path).read())
    data["files"][DISK]["size"] = os.path.getsize(disk)
    open(path, "w").write(json.dumps(data))
    res = verify_folder(shell, folder, record=False)
    assert res.status == "damaged" and DISK in res.message and "mismatch" in res.message, res.message


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "dangling", "loop"])
def test_a_symlink_in_place_of_the_image_neither_hangs_nor_tracebacks(tmp_path, target):
    shell, folder, disk = make_backup(tmp_path)
    os.unlink(disk)
    if target == "fifo":
        fifo = str(tmp_path / "fifo")
        os.mkfifo(fifo)
        os.symlink(fifo, disk)
    elif target == "dangling":
        os.symlink(str(tmp_path / "nowhere"), disk)
    elif target == "loop":
        os.symlink(disk, disk)
    else:
        os.symlink(target, disk)
    r = subprocess.run([PYTHON, "-m", "hotvcb", "verify", folder], capture_output=True, text=True, timeout=30,
                       env=env())
    out = r.stdout + r.stderr
    assert r.returncode != 0 and DISK in out and "Traceback" not in out, out


def test_small_clusters_on_an_empty_disk_are_skipped_by_l2_span_not_read_cluster_by_cluster(tmp_path):
    """An empty 2 KiB-cluster image has no L2 table at all, yet each 1 MiB block is looked up cluster by
    cluster (an L2 table of 2 KiB clusters maps 512 KiB, less than a block, so the span skip never
    fires): 512 lookups per MiB, ~0.8 s per GiB here, 27 minutes for an empty 2 TiB user image whose
    content the backup digests beside qemu-img's copy of seconds."""
    image = str(tmp_path / "small.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=2048", image, "2G")
    looked = []

    class Counting(qcow2.Image):
        def host_offset(self, cluster):
            looked.append(cluster)
            return super().host_offset(cluster)

    with open(image, "rb", buffering=0) as f:
        blocks = [(off, n, d is None) for off, n, d in Counting(f, image).blocks(MIB)]
    assert blocks == [(0, 2 << 30, True)]
    assert len(looked) < 4096, "%d cluster lookups for a disk without a single L2 table" % len(looked)


def test_every_cluster_size_reads_as_qemu_reads_it(tmp_path):
    src = raw_source(str(tmp_path / "src.raw"), 3 * MIB + 512)
    for bits in (9, 10, 12, 16, 21):
        out = str(tmp_path / ("c%d.qcow2" % bits))
        qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=%d" % (1 << bits), src, out)
        got = manifest.digest_content(LocalShell(), out, "qcow2").entry()
        assert got == manifest.digest_file(LocalShell(), src).entry(), bits


def aliased_terabyte(tmp_path):
    """A 1 TiB backup holding 64 KiB, sealed, then every L1 entry pointed at its one L2 table and every
    entry of that at its one data cluster (the file keeps its size)."""
    folder = tmp_path / "vol" / "VM" / "VM-2026-12-02_12-00-00"
    folder.mkdir(parents=True)
    disk = str(folder / DISK)
    qemu_img("create", "-q", "-f", "qcow2", disk, "1T")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 64k", disk], check=True,
                   stdout=subprocess.DEVNULL)
    shell = LocalShell()
    files = {DISK: {"size": os.path.getsize(disk), "content": dict(
        manifest.digest_content(shell, disk, "qcow2").entry(), format="qcow2")}}
    (folder / manifest.MANIFEST).write_text(manifest.dumps({"vm": "VM", "result": "ok", "files": files,
                                                            "disks": [{"key": "drive0", "files": [DISK], "ok": True}]}))
    (folder / "STATUS.ok").write_text("ok\n")
    assert verify_folder(shell, str(folder), record=False).status == "ok"
    cluster, l1, _r = header(disk)
    l2, entries = l2_entries(disk)
    (_at, data), = entries
    poke(disk, l2, struct.pack(">Q", data) * (cluster // 8))  # every cluster of the span is the one
    l1_entry = u64(disk, l1)
    poke(disk, l1, struct.pack(">Q", l1_entry) * ((1 << 40) // (cluster * cluster // 8)))
    return str(folder)


def test_a_sparse_terabyte_whose_tables_all_alias_one_cluster_is_not_read_whole(tmp_path):
    """L1 entries pointing at one L2 table and its entries at one data cluster: a 1 TiB backup holding
    64 KiB now claims a terabyte of data. Its first block already disagrees with the manifest; verify
    must say so in seconds, not hash a terabyte of one cluster read over and over."""
    folder = aliased_terabyte(tmp_path)
    try:
        r = subprocess.run([PYTHON, "-m", "hotvcb", "verify", folder], capture_output=True, text=True,
                           timeout=20, env=env())
    except subprocess.TimeoutExpired:
        pytest.fail("verify still reading after 20 s: it hashes the whole aliased terabyte before comparing")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and DISK in out and "Traceback" not in out, out


def sound_slow_backup(tmp_path):
    """A sound backup whose content verify reads for a while: 256 MiB of data in 1 KiB clusters (256
    lookups per MiB; the aliased terabyte above, which the tester used first, is now refused at once)."""
    src = str(tmp_path / "data.raw")
    with open(src, "wb") as f:
        for i in range(256):
            f.write(hashlib.sha256(b"%d" % i).digest() * (MIB // 32))
    folder = tmp_path / "vol" / "VM" / "VM-2026-12-02_12-00-00"
    folder.mkdir(parents=True)
    disk = str(folder / DISK)
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=1024", src, disk)
    shell = LocalShell()
    files = {DISK: {"size": os.path.getsize(disk), "content": dict(manifest.digest_file(shell, src).entry(),
                                                                   format="qcow2")}}
    (folder / manifest.MANIFEST).write_text(manifest.dumps({"vm": "VM", "result": "ok", "files": files,
                                                            "disks": [{"key": "drive0", "files": [DISK], "ok": True}]}))
    (folder / "STATUS.ok").write_text("ok\n")
    return str(folder), disk


def test_sigterm_stops_a_long_content_verify_promptly_and_records_nothing(tmp_path):
    folder, disk = sound_slow_backup(tmp_path)
    path = os.path.join(folder, manifest.MANIFEST)
    before = open(path, "rb").read()
    proc = subprocess.Popen([PYTHON, "-m", "hotvcb", "verify", folder], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env())
    deadline = time.monotonic() + 30
    while not _has_open(proc.pid, disk):  # the digest has begun: the image is open
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("verify went on reading 10 s after SIGTERM")
    text = out.decode(errors="replace")
    assert proc.returncode == 2 and "interrupted by SIGTERM" in text and "Traceback" not in text, text
    assert open(path, "rb").read() == before  # no verdict recorded from a verify that did not finish


def _has_open(pid, path):
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                return True
        except OSError:
            pass
    return False


def test_two_verifies_at_once_leave_one_valid_version_3_manifest(tmp_path):
    shell, folder, disk = make_backup(tmp_path)
    procs = [subprocess.Popen([PYTHON, "-m", "hotvcb", "verify", folder], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env()) for _ in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0 and b"Traceback" not in out, out
    data = manifest.load(shell, folder)
    assert data["version"] == 3 and "content" in data["files"][DISK] and data.get("verified"), data
    assert verify_folder(shell, folder, record=False).status == "ok"


# -- old and future manifests ------------------------------------------------------------------


def _rewrite(folder, edit):
    path = os.path.join(folder, manifest.MANIFEST)
    data = json.loads(open(path).read())
    edit(data)
    open(path, "w").write(json.dumps(data))


def test_a_version_2_qcow2_backup_still_verifies_and_finds_damage(tmp_path):
    shell, folder, disk = make_backup(tmp_path)

    def v2(data):
        data["version"] = 2
        data["files"][DISK] = manifest.digest_file(shell, disk).entry()

    _rewrite(folder, v2)
    assert verify_folder(shell, folder, record=False).status == "ok"
    flip_data(disk)
    res = verify_folder(shell, folder, record=False)
    assert res.status == "damaged" and DISK in res.message, res.message


def test_a_version_1_qcow2_backup_still_verifies_and_finds_damage(tmp_path):
    shell, folder, disk = make_backup(tmp_path)

    def v1(data):
        data["version"] = 1
        data["files"][DISK] = {"size": os.path.getsize(disk),
                               "sha256": hashlib.sha256(open(disk, "rb").read()).hexdigest()}

    _rewrite(folder, v1)
    res = verify_folder(shell, folder)
    assert res.status == "ok", res.message
    assert json.loads(open(os.path.join(folder, manifest.MANIFEST)).read())["version"] == 1
    flip_data(disk)
    res = verify_folder(shell, folder, record=False)
    assert res.status == "damaged" and DISK in res.message, res.message


def test_a_manifest_from_a_newer_hotvcb_is_refused_not_half_read(tmp_path):
    shell, folder, _disk = make_backup(tmp_path)
    _rewrite(folder, lambda d: d.update(version=4))
    r = subprocess.run([PYTHON, "-m", "hotvcb", "verify", folder], capture_output=True, text=True, timeout=60,
                       env=env())
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "newer hotvcb" in out and "Traceback" not in out, out


def test_a_content_entry_whose_size_is_not_a_number_is_one_line(tmp_path):
    shell, folder, _disk = make_backup(tmp_path)
    for bad in ("6291456", -1, None, 1e300, True):
        _rewrite(folder, lambda d: d["files"][DISK]["content"].update(size=bad))
        res = verify_folder(shell, folder, record=False)
        assert res.status == "damaged" and "\n" not in res.message, (bad, res.message)
        assert DISK in res.message or '"content" entry' in res.message, (bad, res.message)


# -- through a real QEMU VM --------------------------------------------------------------------------


def _backup(lab, name, source, **keys):  # noqa: F811
    argv = hotvcb_argv(lab.inventory, "backup", "-m", name, "-g", lab.conf(DISK_BACKUP_FORMAT="qcow2", **keys),
                       "-w", lab.workdir)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr


def _verify(path):
    return subprocess.run([PYTHON, "-m", "hotvcb", "verify", path], capture_output=True, text=True, timeout=120,
                          env=env())


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_a_raw_source_of_an_odd_size_backs_up_verifies_and_compares(lab):  # noqa: F811
    name = "odd 'size'"
    image = os.path.join(lab.images, name + ".img")
    raw_source(image, 5 * MIB + 100)
    lab.start(name, image, "raw")
    _backup(lab, name, "raw")
    (backup,) = lab.backups(name)
    disk = os.path.join(backup, name + ".qcow2")
    r = _verify(backup)
    assert r.returncode == 0, r.stdout + r.stderr
    assert run_qemu_img("compare", "-f", "qcow2", "-F", "raw", disk, image).returncode == 0
    flip_data(disk)
    r = _verify(backup)
    assert r.returncode != 0 and name + ".qcow2" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_a_small_cluster_qcow2_source_is_proven_by_content_and_a_damaged_copy_is_not_restored(lab, tmp_path):  # noqa: F811
    name = "small"
    src = raw_source(str(tmp_path / "src.raw"), 8 * MIB)
    image = os.path.join(lab.images, name + ".qcow2")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", src, image)
    lab.start(name, image, "qcow2")
    _backup(lab, name, "qcow2")
    (backup,) = lab.backups(name)
    disk = os.path.join(backup, name + ".qcow2")
    data = json.loads(open(os.path.join(backup, manifest.MANIFEST)).read())
    assert "content" in data["files"][name + ".qcow2"], data
    assert same_content(src, disk)
    assert _verify(backup).returncode == 0
    l2_at_l1(disk)  # damage the reader follows without complaint: only the content tells
    _refused_restore(backup, name, tmp_path)


def _refused_restore(backup, name, tmp_path):
    """`restore --kvm` of the damaged backup refuses in one line naming the disk and writes nothing."""
    target = str(tmp_path / "restored")
    os.makedirs(target)
    r = subprocess.run([PYTHON, "-m", "hotvcb", "restore", backup, "--kvm", target], capture_output=True,
                       text=True, timeout=120, env=env())
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out and name + ".qcow2" in out, out
    assert os.listdir(target) == [], os.listdir(target)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_a_refused_header_in_a_backup_fails_restore_in_one_line_and_leaves_nothing(lab, tmp_path):  # noqa: F811
    name = "hdr"
    _initial, image = _image(lab, name, "raw", 4 * MIB, 1 * MIB)
    lab.start(name, image, "raw")
    _backup(lab, name, "raw")
    (backup,) = lab.backups(name)
    backing_file(os.path.join(backup, name + ".qcow2"))
    _refused_restore(backup, name, tmp_path)


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_a_gz_whose_qcow2_was_damaged_and_repacked_fails_verify_and_restore(lab, tmp_path):  # noqa: F811
    name = "packed"
    _initial, image = _image(lab, name, "raw", 4 * MIB, 2 * MIB)
    lab.start(name, image, "raw")
    _backup(lab, name, "raw", ENABLE_COMPRESSION=1)
    (archive,) = glob.glob(os.path.join(lab.volume, name, "*.gz"))
    assert _verify(archive).returncode == 0
    unpacked = str(tmp_path / "unpacked")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        tar.extractall(unpacked)
    top = os.path.join(unpacked, members[0].name.split("/")[0])
    flip_data(os.path.join(top, name + ".qcow2"))
    with tarfile.open(archive + ".new", "w:gz") as tar:
        for m in members:
            tar.add(os.path.join(unpacked, m.name), arcname=m.name, recursive=False)
    os.replace(archive + ".new", archive)
    record = sidecar.gz_record(archive)
    if os.path.exists(record):  # its recorded size would tell without reading: make the content tell
        os.unlink(record)
    r = _verify(archive)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and name + ".qcow2" in out and "Traceback" not in out, out
    res = verify_gz(LocalShell(), archive, record=False)
    assert res.status == "damaged", res.message
