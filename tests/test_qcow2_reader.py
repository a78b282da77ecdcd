"""hotvcb/qcow2.py against images qemu made: the virtual disk it reads digests exactly as qemu-img's
own raw conversion of the image (the independent witness), for what `qemu-img convert -O qcow2`
writes and what users make; whatever it does not read is refused in one HostError line."""

import struct
import subprocess

import pytest

from qemuvm import QEMU_IMG, first_l2_entry, qemu_img as run_qemu_img

from hotvcb import qcow2
from hotvcb.errors import HostError
from hotvcb.localshell import LocalShell
from hotvcb.store import manifest

pytestmark = pytest.mark.skipif(QEMU_IMG is None, reason="needs qemu-img (qemu-utils)")
MIB = 1 << 20


def qemu_img(*args):
    done = run_qemu_img(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def qemu_io(path, *commands, fmt="qcow2"):
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    subprocess.run(argv + [path], check=True, stdout=subprocess.DEVNULL)


def content(path):
    return manifest.digest_content(LocalShell(), path, "qcow2").entry()


def witness(path, tmp_path):
    """The digest of qemu-img's own raw conversion of the image."""
    raw = str(tmp_path / "witness.raw")
    qemu_img("convert", "-O", "raw", path, raw)
    return manifest.digest_file(LocalShell(), raw).entry()


@pytest.fixture
def user_image(tmp_path):
    """Data, a zero-flag range, a partial cluster and the last block, as a guest leaves them."""
    path = str(tmp_path / "user.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", path, "40M")
    qemu_io(path, "write -P 0xab 1M 3M", "write -z 2M 512k", "write -P 0x11 20M 64k", "write -P 0x33 5000 1000",
            "write -P 0x22 39M 1M")
    return path


@pytest.mark.parametrize("options", [[], ["-o", "cluster_size=4096"], ["-o", "cluster_size=2M"],
                                     ["-o", "compat=0.10"], ["-o", "preallocation=metadata"]])
def test_what_qemu_img_convert_writes_reads_as_its_raw_conversion(user_image, tmp_path, options):
    out = str(tmp_path / "copy.qcow2")
    qemu_img("convert", "-O", "qcow2", *options, user_image, out)
    assert content(out) == witness(out, tmp_path) == witness(user_image, tmp_path)


def test_a_users_image_with_zero_flag_clusters_reads_as_zeros(user_image, tmp_path):
    got = content(user_image)
    assert got == witness(user_image, tmp_path)
    qemu_io(user_image, "write -z 1M 3M")  # zero-flag clusters over what was data (qcow2 v3, L2 bit 0)
    zeroed = content(user_image)
    assert zeroed != got and zeroed == witness(user_image, tmp_path)


def test_a_size_that_is_no_whole_block_and_an_empty_image(tmp_path):
    odd = str(tmp_path / "odd.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", odd, str(5 * MIB + 512))
    qemu_io(odd, "write -P 0x5a 5M 512")
    assert content(odd)["size"] == 5 * MIB + 512 and content(odd) == witness(odd, tmp_path)
    empty = str(tmp_path / "empty.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", empty, "3G")
    assert content(empty) == witness(empty, tmp_path)


def test_threads_and_one_thread_agree(user_image):
    from hotvcb import blockdigest

    with open(user_image, "rb", buffering=0) as f:
        image = qcow2.Image(f, user_image)
        one = blockdigest.digest_blocks(lambda ring: image.blocks(MIB, None, ring), MIB, threads=1)
        many = blockdigest.digest_blocks(lambda ring: image.blocks(MIB, None, ring), MIB, threads=4)
    assert one == many


def refused(path):
    with pytest.raises(HostError) as err:
        content(path)
    message = str(err.value)
    assert "\n" not in message and path in message
    return message


def test_a_backing_file_is_refused(user_image, tmp_path):
    top = str(tmp_path / "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", user_image, top)
    assert "backing file" in refused(top)


def test_compressed_clusters_are_refused(user_image, tmp_path):
    out = str(tmp_path / "c.qcow2")
    qemu_img("convert", "-c", "-O", "qcow2", user_image, out)
    assert "compressed" in refused(out)


def test_encryption_external_data_and_extended_l2_are_refused(tmp_path):
    enc = str(tmp_path / "enc.qcow2")
    for _ in range(5):
        # LUKS creation times its key derivation by CPU usage; on a loaded machine qemu-img can
        # fail that calibration ("Unable to get accurate CPU usage"): a qemu-img limit, so retry. The key
        # slot's derivation is set to 10 ms (encrypt.iter-time; 2 s by default): half the CPU, the same image kind
        done = run_qemu_img("create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2", "-o",
                            "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", enc, "8M")
        if "accurate CPU usage" not in done.stdout + done.stderr:
            break
    assert done.returncode == 0, done.stdout + done.stderr
    assert "encrypted" in refused(enc)
    ext = str(tmp_path / "ext.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "data_file=" + str(tmp_path / "ext.data"), ext, "8M")
    assert "external data file" in refused(ext)
    l2 = str(tmp_path / "l2.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", l2, "8M")
    assert "extended L2" in refused(l2)


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("damage,why", [
    (lambda p: poke(p, 0, b"QFI\x00"), "not a qcow2"),
    (lambda p: poke(p, 4, struct.pack(">I", 4)), "version 4"),
    (lambda p: poke(p, 20, struct.pack(">I", 30)), "cluster bits"),
    (lambda p: poke(p, 24, struct.pack(">Q", 1 << 62)), "virtual size"),
    (lambda p: poke(p, 36, struct.pack(">I", 1 << 30)), "L1 table"),
    (lambda p: poke(p, 36, struct.pack(">I", 0)), "too small"),
    (lambda p: poke(p, 40, struct.pack(">Q", 12345)), "L1 table"),
    (lambda p: poke(p, 40, struct.pack(">Q", 1 << 40)), "L1 table"),
    (lambda p: poke(p, 72, struct.pack(">Q", 1 << 1)), "corrupt"),
    (lambda p: poke(p, 72, struct.pack(">Q", 1 << 9)), "unknown incompatible"),
    (lambda p: poke(p, first_l2_entry(p)[0], struct.pack(">Q", first_l2_entry(p)[1] + 512)), "cluster"),
    (lambda p: poke(p, first_l2_entry(p)[0], struct.pack(">Q", 1 << 63 | 1 << 50)), "cluster"),
    (lambda p: poke(p, first_l2_entry(p)[0], struct.pack(">Q", first_l2_entry(p)[1] | 1 << 57)), "reserved"),
])
def test_damage_is_refused_in_one_line(user_image, tmp_path, damage, why):
    out = str(tmp_path / "copy.qcow2")
    qemu_img("convert", "-O", "qcow2", user_image, out)
    damage(out)
    assert why in refused(out)


def test_a_garbage_file_and_a_truncated_header_are_refused(tmp_path):
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"\x00" * 4096)
    assert "not a qcow2" in refused(str(junk))
    cut = tmp_path / "cut.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(cut), "8M")
    cut.write_bytes(cut.read_bytes()[:80])
    assert "cut short" in refused(str(cut))


# -- content entries through verify (jobs/verify.py), the manifest hand-made as the seal writes it --------


def content_backup(tmp_path, edit=None):
    """A sealed folder holding one qcow2 with a content entry (and a .vmx with a file entry)."""
    from hotvcb.store.manifest import ContentDigest

    folder = tmp_path / "VM-2026-12-02_12-00-00"
    folder.mkdir()
    disk = str(folder / "VM.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", disk, "6M")
    qemu_io(disk, "write -P 0x77 1M 2M")
    (folder / "VM.json").write_text("{}\n")
    shell = LocalShell()
    files = {"VM.json": manifest.digest_file(shell, str(folder / "VM.json")).entry(),
             "VM.qcow2": ContentDigest("qcow2", manifest.digest_content(shell, disk, "qcow2")).entry(
                 shell.file_size(disk))}
    if edit is not None:
        edit(files["VM.qcow2"])
    (folder / manifest.MANIFEST).write_text(manifest.dumps({"vm": "VM", "result": "ok", "files": files}))
    (folder / "STATUS.ok").write_text("ok\n")
    return shell, folder


def test_a_content_entry_verifies_and_is_written_as_version_3(tmp_path):
    from hotvcb.jobs.verify import verify_folder

    shell, folder = content_backup(tmp_path)
    assert manifest.load(shell, str(folder))["version"] == 3
    res = verify_folder(shell, str(folder))
    assert res.status == "ok", res.message
    assert manifest.load(shell, str(folder))["version"] == 3  # recording the result keeps it


def test_a_qcow2_grown_or_cut_is_damaged_by_its_size_before_it_is_read(tmp_path):
    from hotvcb.jobs.verify import verify_folder

    shell, folder = content_backup(tmp_path)
    with open(str(folder / "VM.qcow2"), "ab") as f:
        f.write(b"\0" * 65536)  # the same virtual disk: only the file's size tells
    res = verify_folder(shell, str(folder))
    assert res.status == "damaged" and "VM.qcow2: size" in res.message, res.message


@pytest.mark.parametrize("edit,says", [
    (lambda e: e["content"].update(format="vdi"), "manifest entry unusable: its content format 'vdi'"),
    (lambda e: e["content"]["blocks"].update(size=7), "manifest entry unusable: its block size 7"),
    (lambda e: e["content"].update(sha256_of_blocks="0" * 64), "VM.qcow2: content SHA-256 mismatch"),
    (lambda e: e.update(content="garbage"), "a \"content\" entry is not a record"),
])
def test_a_damaged_content_entry_is_damage_in_one_line(tmp_path, edit, says):
    from hotvcb.jobs.verify import verify_folder

    shell, folder = content_backup(tmp_path, edit)
    res = verify_folder(shell, str(folder), record=False)
    assert res.status == "damaged" and says in res.message and "\n" not in res.message, res.message


def test_a_content_only_entry_inside_a_gz_is_named_not_misread(tmp_path):
    import tarfile

    from hotvcb.jobs.verify import verify_gz

    shell, folder = content_backup(tmp_path)
    gz = str(tmp_path / (folder.name + ".gz"))
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(str(folder), arcname=folder.name)
    res = verify_gz(shell, gz, record=False)
    assert res.status == "damaged" and "VM.qcow2: holds only a disk's content digest" in res.message, res.message


def test_a_header_claiming_another_size_is_damage_found_without_reading_the_disk(tmp_path):
    """A flipped size field could claim petabytes: the header is compared with the entry first."""
    from hotvcb.jobs.verify import verify_folder

    shell, folder = content_backup(tmp_path)
    with open(str(folder / "VM.qcow2"), "r+b") as f:
        f.seek(24)
        f.write(struct.pack(">Q", 1 << 50))
    res = verify_folder(shell, str(folder), record=False)
    assert res.status == "damaged" and "VM.qcow2: content size %d, manifest says" % (1 << 50) in res.message, (
        res.message)


def test_an_empty_terabyte_is_read_by_l2_span_not_block_by_block(tmp_path):
    image = str(tmp_path / "tb.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", image, "1T")
    qemu_io(image, "write -P 0x99 768G 64k")
    looked = []

    class Counting(qcow2.Image):
        def _pieces(self, off, n):
            looked.append(off)
            return super()._pieces(off, n)

    with open(image, "rb", buffering=0) as f:
        blocks = [(off, n, d is None) for off, n, d in Counting(f, image).blocks(MIB)]
    assert blocks == [(0, 768 << 30, True), (768 << 30, MIB, False), ((768 << 30) + MIB, (256 << 30) - MIB, True)]
    assert len(looked) == 512  # the blocks of the one 512 MiB span that has an L2 table, of 1,048,576
    assert content(image)["size"] == 1 << 40


def test_a_fifo_in_place_of_the_qcow2_is_not_opened(tmp_path):
    import os

    from hotvcb.jobs.verify import verify_folder

    shell, folder = content_backup(tmp_path, lambda e: e.update(size=0))
    os.unlink(str(folder / "VM.qcow2"))
    os.mkfifo(str(folder / "VM.qcow2"))
    res = verify_folder(shell, str(folder), record=False)  # returns: the FIFO was never opened for reading
    # no regular file, so not among the folder's files (Shell.list_files): named as what stands there
    assert res.status == "damaged" and "VM.qcow2: unreadable" in res.message and "not a regular file" in res.message, \
        res.message
