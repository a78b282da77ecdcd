"""openfiles.holders against a fake /proc: which descriptors it looks behind. A stat of /proc/PID/fd/N reaches
the file system behind the descriptor; one process holding a file on a dead hard-mounted NFS share hung the
whole search (and with it the VM's load and its overlays) with no timeout. Only a descriptor whose link names
a wanted file's name, or one of a process in another mount namespace (a container naming it by another path),
may be stat'ed, and only its fdinfo read."""
import builtins
import os

import pytest

from hotvcb.hosts import openfiles


@pytest.fixture
def fake_proc(tmp_path, monkeypatch):
    """/proc with three processes: 100 (our namespace) holds disk.raw for writing and elsewhere.img (behind a
    `dead NFS share`, never to be stat'ed); 200 (our namespace) holds only the other file; 300 (another mount
    namespace) holds disk.raw by another path and name, read-only."""
    files = tmp_path / "files"
    files.mkdir()
    disk, other = files / "disk.raw", files / "elsewhere.img"
    disk.write_bytes(b"d")
    other.write_bytes(b"o")
    os.link(str(disk), str(files / "container-name.raw"))
    proc = tmp_path / "proc"

    def process(pid, ns, fds):
        (proc / pid / "fd").mkdir(parents=True)
        (proc / pid / "fdinfo").mkdir()
        (proc / pid / "ns").mkdir()
        os.symlink(ns, str(proc / pid / "ns" / "mnt"))
        for n, (target, flags) in enumerate(fds):
            os.symlink(str(target), str(proc / pid / "fd" / str(n)))
            (proc / pid / "fdinfo" / str(n)).write_text("pos:\t0\nflags:\t%s\n" % flags)
    process("self", "mnt:[1]", [])
    process("100", "mnt:[1]", [(other, "0100002"), (disk, "0100002")])
    process("200", "mnt:[1]", [(other, "0100002")])
    process("300", "mnt:[2]", [(files / "container-name.raw", "0100000")])
    monkeypatch.setattr(openfiles, "PROC", str(proc))
    looked, real_stat, real_open = [], os.stat, builtins.open

    def stat(path, *args, **kwargs):
        if str(path).startswith(str(proc)):
            looked.append(os.path.relpath(str(path), str(proc)))
        return real_stat(path, *args, **kwargs)

    def opened(path, *args, **kwargs):
        if str(path).startswith(str(proc)):
            looked.append(os.path.relpath(str(path), str(proc)))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(builtins, "open", opened)
    return str(disk), looked


def test_only_descriptors_naming_a_wanted_file_or_in_another_namespace_are_stated(fake_proc):
    disk, looked = fake_proc
    assert openfiles.holders([disk]) == [100, 300]
    assert sorted(looked) == ["100/fd/1", "300/fd/0"], looked


def test_fdinfo_is_read_only_for_the_wanted_files_descriptors(fake_proc):
    disk, looked = fake_proc
    assert openfiles.holders([disk], writers=True) == [100]
    assert sorted(p for p in looked if "/fdinfo/" in p) == ["100/fdinfo/1", "300/fdinfo/0"], looked


def test_a_disk_given_by_a_link_is_found_held_by_its_real_name(fake_proc, tmp_path):
    """A cluster disk is given to QEMU as /dev/disk/by-id/… or /dev/mapper/…, links whose target /proc names:
    matched by the link's own name alone, the other QEMU writing it went unseen and the disk got a private
    overlay (split brain)."""
    disk, looked = fake_proc
    by_id = tmp_path / "by-id-scsi-0QEMU_disk"
    os.symlink(disk, str(by_id))
    assert openfiles.holders([str(by_id)], writers=True) == [100]
