"""One conformance suite for every implementation of the Shell contract (hotvcb/shell.py).

LocalShell and SshShell (to a real sshd on loopback) must behave the same for
every call the jobs make; targz.ArchiveView must keep the read side
(FileReader) of a backup folder packed into a .gz. Each test states one clause
of the contract, so a shell that breaks it fails here, not in a backup.
"""

import errno
import hashlib
import os
import stat
import time

import pytest

from hotvcb import targz
from hotvcb.errors import HostError, TimeoutExpired
from hotvcb.localshell import LocalShell
from hotvcb.sshconnection import SshTarget
from hotvcb.sshshell import SshShell
from hotvcb.treeview import ScannedShell
from sshd import needs_sshd, running_sshd

ODD = "Prüf \"q\" 'x' [1] ; $HOME"  # a name like the VM names admins give


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(params=["local", pytest.param("ssh", marks=needs_sshd), "scanned",
                        pytest.param("scanned-ssh", marks=needs_sshd)])
def shell(request, tmp_path):
    """Each shell; `scanned`: a ScannedShell over the test's folder (its reads answered
    from one Shell.scan, its changes dropping the scan) must keep the same contract."""
    if request.param in ("local", "scanned"):
        yield LocalShell() if request.param == "local" else ScannedShell(LocalShell(), str(tmp_path))
        return
    server = request.getfixturevalue("sshd")
    with SshShell(SshTarget(server.target, server.port, server.identity, server.known_hosts)) as s:
        yield s if request.param == "ssh" else ScannedShell(s, str(tmp_path))


def test_now_is_the_hosts_wall_clock_whatever_our_zone(shell, monkeypatch):
    """Backups are named by the host's clock (an ESXi host keeps UTC): a client in another zone must not
    name them by its own. The host here is this machine in its zone; this process moves to another."""
    from datetime import datetime

    host_wall = datetime.now()
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: no zone is further from any host's
    time.tzset()
    try:
        if shell.remote:  # (a local shell's host is this process, in its zone)
            assert abs((shell.now() - host_wall).total_seconds()) < 5
    finally:
        monkeypatch.undo()
        time.tzset()
    assert abs((shell.now() - datetime.now()).total_seconds()) < 5


def test_text_round_trips_atomically_under_odd_names(shell, tmp_path):
    path = str(tmp_path / (ODD + ".vmx"))
    shell.write_text(path, 'displayName = "%s"\n' % ODD)
    shell.write_text(path, "second\n")
    assert shell.read_text(path) == "second\n"
    assert sorted(os.listdir(str(tmp_path))) == [ODD + ".vmx"], "no temp file is left beside it"
    with pytest.raises(HostError):
        shell.read_text(str(tmp_path / "missing"))


def test_a_write_that_leaves_its_folder_unsynced_is_as_atomic(shell, tmp_path):
    path = str(tmp_path / (ODD + ".json"))
    shell.write_text(path, "first\n", sync_folder=False)
    shell.write_text(path, "second\n", sync_folder=False)
    assert shell.read_text(path) == "second\n"
    assert sorted(os.listdir(str(tmp_path))) == [ODD + ".json"], "no temp file is left beside it"


def test_a_write_told_to_keep_its_folders_time_leaves_it_as_it_was(shell, tmp_path):
    """verify records its result in a finished backup: ghettoVCB's rotation keeps the folders `ls -t` lists
    first, so the folder's modification time must stay; the file itself is new, and an ordinary write moves it."""
    folder = tmp_path / ODD
    folder.mkdir()
    path = str(folder / "hotvcb.json")
    shell.write_text(path, "{}\n")
    past = time.time() - 3600
    os.utime(str(folder), (past, past))
    shell.write_text(path, "{\"verified\": 1}\n", keep_folder_time=True)
    assert shell.read_text(path) == "{\"verified\": 1}\n"
    assert abs(os.stat(str(folder)).st_mtime - past) < 1
    assert os.listdir(str(folder)) == ["hotvcb.json"], "no temp file is left beside it"
    shell.write_text(path, "{}\n")
    assert os.stat(str(folder)).st_mtime > past + 3000


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_write_keeping_its_folders_time_keeps_it_when_the_volume_is_full(shell, tmpfs):
    """A full backup volume: the temp file is made and removed in the folder, the write fails, and the folder's
    time is still put back (verify of an old backup must not make it the newest to ghettoVCB's rotation)."""
    folder = tmpfs("full", "256k") / "web-1"
    folder.mkdir()
    with open(str(folder.parent / "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    past = time.time() - 3600
    os.utime(str(folder), (past, past))
    with pytest.raises(HostError):
        shell.write_text(str(folder / "hotvcb.json"), "{\"verified\": 1}\n" * 4096, keep_folder_time=True)
    assert os.listdir(str(folder)) == [], "no temp file is left"
    assert abs(os.stat(str(folder)).st_mtime - past) < 1


def test_a_local_write_fsyncs_its_data_always_and_its_folder_unless_told_not_to(tmp_path, monkeypatch):
    synced = []  # per fsync: was it a folder's
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or fsync(fd))
    path = str(tmp_path / "hotvcb.json")
    LocalShell().write_text(path, "{}\n", sync_folder=False)
    assert synced == [False]
    LocalShell().write_text(path, "{}\n")
    assert synced == [False, False, True]


def test_listing_and_tests(shell, tmp_path):
    root = tmp_path / ODD
    shell.makedirs(str(root / "ds" / "deep"))
    shell.makedirs(str(root / "ds" / "deep"))  # again: no error
    (root / "a.vmdk").write_text("a")
    (root / ".hidden").write_text("h")
    (root / "ds" / "deep" / "b-flat.vmdk").write_text("b")
    os.symlink("a.vmdk", str(root / "link"))
    assert shell.exists(str(root / "link")) and shell.exists(str(root / "a.vmdk"))
    assert not shell.exists(str(root / "nope"))
    assert shell.isdir(str(root / "ds")) and not shell.isdir(str(root / "a.vmdk"))
    assert shell.listdir(str(root)) == [".hidden", "a.vmdk", "ds", "link"]
    assert shell.list_files(str(root / "ds")) == ["deep/b-flat.vmdk"]
    with pytest.raises(HostError):
        shell.listdir(str(root / "nope"))


def test_list_files_lists_the_regular_files_a_folder_holds_never_links(shell, tmp_path):
    """A backup's data is the regular files in its folder: a symlink planted there (to a file, to a folder, or
    dangling) or a FIFO is none of it, and no link is followed down; the folder itself may be reached through a
    link (a datastore's name is one)."""
    root = tmp_path / "vm-2026-01-01_00-00-00"
    (root / "deep").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "big-flat.vmdk").write_text("x")
    (root / "vm.vmx").write_text("v")
    (root / "deep" / "b-flat.vmdk").write_text("b")
    os.symlink(str(tmp_path / "elsewhere" / "big-flat.vmdk"), str(root / "vm-flat.vmdk"))
    os.symlink(str(tmp_path / "elsewhere"), str(root / "linked"))
    os.symlink("gone.vmdk", str(root / "dangling.vmdk"))
    os.mkfifo(str(root / "fifo"))
    os.symlink(root.name, str(tmp_path / "latest"))
    assert shell.list_files(str(root)) == ["deep/b-flat.vmdk", "vm.vmx"]
    assert shell.list_files(str(tmp_path / "latest")) == ["deep/b-flat.vmdk", "vm.vmx"]


def test_list_files_of_a_folder_that_cannot_be_listed_is_an_error_never_an_empty_one(shell, tmp_path):
    """A backup folder removed while it is judged (or a file where a folder should be) holds no files: it
    is not there, which the caller must hear as such (LocalShell said [], SshShell raised)."""
    (tmp_path / "a-file").write_text("x")
    for path in (tmp_path / "gone", tmp_path / "a-file"):
        with pytest.raises(HostError):
            shell.list_files(str(path))


def test_absent_is_proven_and_a_look_that_cannot_tell_is_an_error(shell, tmp_path):
    """Whether a backup went (store/layout.gone) rests on it: nothing there (ENOENT, or a file where a folder
    is in the path: ENOTDIR) is True; anything there, a dangling link too, False; an lstat failing otherwise
    (here a link loop; EIO, ESTALE on a share not answering) is no answer, never False's "not there"."""
    (tmp_path / "a-file").write_text("x")
    (tmp_path / ODD).write_text("x")
    (tmp_path / "a-folder").mkdir()
    os.symlink("nowhere", str(tmp_path / "dangling"))
    os.symlink("loop", str(tmp_path / "loop"))
    for name in ("gone", "a-file/below"):
        assert shell.absent(str(tmp_path / name)) is True, name
    for name in ("a-file", ODD, "a-folder", "dangling"):
        assert shell.absent(str(tmp_path / name)) is False, name
    with pytest.raises(HostError):
        shell.absent(str(tmp_path / "loop" / "x"))
    assert shell.exists(str(tmp_path / "a-file"))  # a ScannedShell's scan taken
    (tmp_path / "a-file").unlink()
    assert shell.absent(str(tmp_path / "a-file")) is True, "a look now, never a scan's"


def test_claims_are_atomic_and_say_who_won(shell, tmp_path):
    folder = str(tmp_path / "vm-2026-01-01_00-00-00-partial")
    assert shell.make_new_dir(folder) is True
    assert shell.make_new_dir(folder) is False
    src = str(tmp_path / "record")
    shell.write_text(src, "run=1\n")
    assert shell.link_new(src, str(tmp_path / "lock")) is True
    assert shell.link_new(src, str(tmp_path / "lock")) is False
    assert shell.read_text(str(tmp_path / "lock")) == "run=1\n"
    with pytest.raises(HostError):
        shell.link_new(str(tmp_path / "missing"), str(tmp_path / "other"))


@pytest.mark.parametrize("refusal", [errno.EPERM, errno.EOPNOTSUPP])
def test_a_local_claim_on_a_file_system_without_hard_links_is_as_atomic(tmp_path, monkeypatch, refusal):
    """vfat, exFAT, some CIFS/FUSE mounts refuse link(2): a QEMU image kept there took no snapshot ("cannot
    link" its overlay's description). The claim is then a copy renamed without replacing: still one winner,
    the content whole, the source kept (a lock's takeover claims its guard and then the lock from one file)."""
    def no_links(src, dst):
        raise OSError(refusal, os.strerror(refusal))
    monkeypatch.setattr(os, "link", no_links)
    shell = LocalShell()
    src = str(tmp_path / "record")
    shell.write_text(src, "run=1\n")
    assert shell.link_new(src, str(tmp_path / "lock")) is True
    assert shell.link_new(src, str(tmp_path / "lock")) is False
    assert shell.read_text(str(tmp_path / "lock")) == "run=1\n" and shell.read_text(src) == "run=1\n"
    assert sorted(os.listdir(str(tmp_path))) == ["lock", "record"]  # no copy left behind
    with pytest.raises(HostError):
        shell.link_new(str(tmp_path / "missing"), str(tmp_path / "other"))


def test_age_and_touch_use_the_hosts_clock(shell, tmp_path):
    path = tmp_path / "beat"
    path.write_text("x")
    past = time.time() - 3600
    os.utime(str(path), (past, past))
    assert 3590 < shell.age(str(path)) < 3700
    shell.touch(str(path))
    assert shell.age(str(path)) < 60
    assert shell.age(str(tmp_path / "missing")) is None
    shell.touch(str(tmp_path / "missing"))
    assert not (tmp_path / "missing").exists(), "touch never creates"


def test_rename_remove_copy(shell, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "f").write_text("data")
    shell.rename(str(a), str(tmp_path / "moved"))
    assert (tmp_path / "moved" / "f").read_text() == "data"
    b.mkdir()
    with pytest.raises(HostError):
        shell.rename(str(tmp_path / "moved"), str(b))  # never moves a folder *into* another
    shell.copy_file(str(tmp_path / "moved" / "f"), str(tmp_path / "copy"))
    assert (tmp_path / "copy").read_text() == "data"
    shell.remove_tree(str(tmp_path / "moved"))
    shell.remove_tree(str(tmp_path / "copy"))
    shell.remove_tree(str(tmp_path / "missing"))  # nothing there: fine
    assert sorted(os.listdir(str(tmp_path))) == ["b"]


def test_sizes_links_modes_and_paths(shell, tmp_path):
    thin = tmp_path / "thin-flat.vmdk"
    with open(str(thin), "wb") as f:
        f.truncate(64 << 20)
        f.write(b"x" * 4096)
    assert shell.file_size(str(thin)) == 64 << 20
    assert 0 < shell.disk_usage(str(thin)) < 1 << 20, "allocated bytes, not the size"
    shell.symlink("thin-flat.vmdk", str(tmp_path / "latest"))
    shell.symlink("other", str(tmp_path / "latest"))  # replaces the old link
    assert os.readlink(str(tmp_path / "latest")) == "other"
    for look in (shell.file_size, shell.disk_usage):  # a dangling link: the contract's error, naming it
        with pytest.raises(HostError, match="latest"):
            look(str(tmp_path / "latest"))
    shell.chmod(str(thin), 0o640)
    assert os.stat(str(thin)).st_mode & 0o777 == 0o640
    assert shell.file_mode(str(thin)) == 0o640
    os.chmod(str(tmp_path), 0o1750)
    assert shell.file_mode(str(tmp_path)) == 0o1750  # a folder's, the sticky bit too
    os.chmod(str(tmp_path), 0o700)
    with pytest.raises(HostError, match="latest"):
        shell.file_mode(str(tmp_path / "latest"))
    assert shell.realpath(str(tmp_path / "sub" / ".." / "missing")) == str(tmp_path / "missing")
    os.symlink(str(tmp_path), str(tmp_path / "again"))  # one file under two names: one id
    assert shell.file_id(str(tmp_path / "again" / "thin-flat.vmdk")) == shell.file_id(str(thin))
    assert shell.file_id(str(thin)) != shell.file_id(str(tmp_path))
    with pytest.raises(HostError, match="latest"):
        shell.file_id(str(tmp_path / "latest"))


def test_reading_bytes_and_digests_where_the_file_is(shell, tmp_path):
    path = tmp_path / "disk-flat.vmdk"
    with open(str(path), "wb") as f:
        f.truncate(3 << 20)
        f.seek((1 << 20) - 3)
        f.write(b"across an edge")
    data = path.read_bytes()
    with shell.open_binary(str(path)) as f:
        assert f.read(10) + f.read() == data
    assert shell.sha256(str(path)) == hashlib.sha256(data).hexdigest()
    here = LocalShell().block_digests(str(path), 1 << 20, True)
    assert shell.block_digests(str(path), 1 << 20, True) == here
    with pytest.raises(HostError):
        with shell.open_binary(str(tmp_path / "missing")) as f:
            f.read()


def test_one_scan_sees_a_whole_tree(shell, tmp_path):
    root = tmp_path / ("vm " + ODD)
    (root / "ds5").mkdir(parents=True)
    (root / "hotvcb.json").write_text('{"vm": "Prüf"}')
    (root / "STATUS.ok").write_bytes(b"ok \xff\n")  # not UTF-8: read as Latin-1, like read_text
    with open(str(root / "vm-flat.vmdk"), "wb") as f:
        f.truncate(64 << 20)
        f.write(b"x" * 4096)
    (root / "ds5" / "big.vmdk").write_text("d" * 70000)  # over read_max: not read
    os.symlink("ds5", str(root / "latest"))
    tree = shell.scan(str(root), ("hotvcb.json", "STATUS.*", "*.vmdk"), 65536)
    assert sorted(tree) == ["", "STATUS.ok", "ds5", "ds5/big.vmdk", "hotvcb.json", "latest", "vm-flat.vmdk"]
    assert tree[""].kind == "dir" and tree["ds5"].is_dir and tree["latest"].kind == "link" and tree["latest"].is_dir
    flat = tree["vm-flat.vmdk"]
    assert (flat.kind, flat.size, flat.text) == ("file", 64 << 20, None), "a big file's text is never read"
    assert flat.allocated == shell.disk_usage(str(root / "vm-flat.vmdk")) < 1 << 20
    assert tree["hotvcb.json"].text == '{"vm": "Prüf"}' and tree["STATUS.ok"].text == shell.read_text(
        str(root / "STATUS.ok"))
    assert tree["ds5/big.vmdk"].text is None and tree["ds5/big.vmdk"].size == 70000
    via = shell.scan(str(root / "latest"), ("*.vmdk",), 65536)  # a root that links to a folder is entered
    assert sorted(via) == ["", "big.vmdk"] and via[""].is_dir
    assert shell.scan(str(tmp_path / "missing")) == {}
    assert not shell.exists(str(tmp_path / "missing"))


def test_a_scanned_view_without_a_root_reads_through_linked_folders(shell, tmp_path):
    """As the ESXi driver reads /vmfs/volumes/<name>/<vm>/... where <name> links to the volume."""
    volume = tmp_path / "volumes" / "uuid-1"
    (volume / "web").mkdir(parents=True)
    (volume / "web" / "web.vmx").write_text('displayName = "web"\n')
    (volume / "top.vmx").write_text("top\n")
    os.symlink("uuid-1", str(tmp_path / "volumes" / "ds1"))
    view = ScannedShell(shell)
    linked = str(tmp_path / "volumes" / "ds1")
    assert view.read_text(linked + "/top.vmx") == "top\n"  # the datastore's own folder
    assert view.read_text(linked + "/web/web.vmx") == 'displayName = "web"\n'
    assert view.listdir(linked + "/web") == ["web.vmx"] and view.isdir(linked + "/web")
    assert view.listdir(linked) == ["top.vmx", "web"]
    (volume / "web" / "web.nvram").write_text("n")
    assert not view.exists(linked + "/web/web.nvram"), "a view answers from its scan until a change"
    view.run(["true"])
    assert view.exists(linked + "/web/web.nvram"), "a command drops the scan"


def test_many_small_files_are_read_in_one_go(shell, tmp_path):
    folder = tmp_path / ODD
    (folder / "sub").mkdir(parents=True)
    (folder / "a.vmx").write_text('displayName = "%s"\n' % ODD)
    (folder / "sub" / "-b.vmx").write_bytes(b"caf\xe9\n")  # Latin-1, as read_text decodes it
    (folder / "./c").write_text("")
    paths = [str(folder / "a.vmx"), str(folder / "sub" / "-b.vmx"), str(folder / "c"), str(folder / "missing"),
             str(folder / "sub")]
    texts = shell.read_texts(paths)
    assert texts == {paths[0]: 'displayName = "%s"\n' % ODD, paths[1]: shell.read_text(paths[1]), paths[2]: ""}
    assert texts[paths[1]] == "caf\xe9\n"
    assert shell.read_texts([str(folder / "missing")]) == {} and shell.read_texts([]) == {}


def test_planted_files_are_read_bounded_and_never_through_a_fifo_or_symlink(shell, tmp_path):
    """read_regular: a FIFO (nobody writes it: a plain open would wait forever), a symlink to a
    file, a device and a folder are refused; a huge file gives only its first `limit` bytes."""
    folder = tmp_path / ODD
    folder.mkdir()
    (folder / "record").write_bytes(b"caf\xe9\n")
    (folder / "huge").write_bytes(b"x" * 100000)
    os.mkfifo(str(folder / "fifo"))
    os.symlink(str(folder / "record"), str(folder / "link"))
    assert shell.read_regular(str(folder / "record"), 4096) == "caf\xe9\n"
    assert shell.read_regular(str(folder / "huge"), 4096) == "x" * 4096
    for name in ("fifo", "link", "missing"):
        with pytest.raises(HostError):
            shell.read_regular(str(folder / name), 4096)
    for path in ("/dev/zero", str(folder)):
        with pytest.raises(HostError, match="not a regular file"):
            shell.read_regular(path, 4096)


def test_a_planted_file_is_copied_only_as_a_regular_file(shell, tmp_path):
    """copy_regular: a regular file's bytes (not UTF-8 text) are copied as they are; a symlink to a
    regular file, a FIFO nobody writes, a device, a folder and a missing file are refused, none
    followed or waited on, and no copy is left."""
    folder = tmp_path / ODD
    folder.mkdir()
    data = bytes(range(256)) * 300 + b"\xe9"
    (folder / "nvram").write_bytes(data)
    os.mkfifo(str(folder / "fifo"))
    os.symlink(str(folder / "nvram"), str(folder / "link"))
    shell.copy_regular(str(folder / "nvram"), str(folder / "copy"))
    assert (folder / "copy").read_bytes() == data
    for src in (folder / "link", folder / "fifo", "/dev/zero", folder):
        with pytest.raises(HostError, match="not a regular file"):
            shell.copy_regular(str(src), str(folder / "refused"))
    with pytest.raises(HostError):
        shell.copy_regular(str(folder / "missing"), str(folder / "refused"))
    assert sorted(os.listdir(str(folder))) == ["copy", "fifo", "link", "nvram"]


def test_commands_take_argument_lists_and_are_bounded(shell, tmp_path):
    done = shell.run(["printf", "%s|", ODD, "two words"])
    assert done.returncode == 0 and done.output == ODD + "|two words|"
    assert shell.run(["sh", "-c", "exit 3"]).returncode == 3
    seen = []
    shell.run(["printf", "Clone: 10%% done.\\rClone: 60%% done.\\rdone\\n"], on_output=seen.append)
    assert seen == ["Clone: 10% done.", "Clone: 60% done.", "done"]
    with pytest.raises(TimeoutExpired):
        shell.run(["sleep", "30"], timeout=1)


def test_archives_put_the_record_first_and_leave_out_what_is_skipped(shell, tmp_path):
    folder = tmp_path / "vm-2026-01-01_00-00-00-partial"
    (folder / "ds").mkdir(parents=True)
    for name, text in (("a-flat.vmdk", "disk"), ("STATUS.ok", "ok"), ("hotvcb.json", "{}"),
                       (".hotvcb-owner", "run=1"), ("ds/b.vmdk", "b")):
        (folder / name).write_text(text)
    dst = str(tmp_path / "vm.gz")
    shell.make_tar_gz(str(folder), dst, "vm-2026-01-01_00-00-00", first=("hotvcb.json", "STATUS.ok"),
                      skip=(".hotvcb-owner",))
    _top, members, _texts = targz.scan(dst)
    assert [m.rel for m in members][:2] == ["hotvcb.json", "STATUS.ok"]
    assert sorted(m.rel for m in members) == ["STATUS.ok", "a-flat.vmdk", "ds/b.vmdk", "hotvcb.json"]


@pytest.fixture(params=["folder", "archive"])
def reader(request, tmp_path):
    """The read side of a backup: the folder through a shell, or its .gz unopened."""
    folder = tmp_path / "vm-2026-01-01_00-00-00"
    (folder / "ds5").mkdir(parents=True)
    (folder / "vm.vmx").write_text('displayName = "vm"\n')
    (folder / "vm-flat.vmdk").write_bytes(b"\0" * 4096)
    (folder / "ds5" / "vm_1.vmdk").write_text("# Disk DescriptorFile\n")
    if request.param == "folder":
        return LocalShell(), str(folder)
    gz = str(tmp_path / "vm-2026-01-01_00-00-00.gz")
    LocalShell().make_tar_gz(str(folder), gz, folder.name)
    return targz.ArchiveView(gz), gz


def test_the_read_side_of_a_backup_is_the_same_packed_or_not(reader):
    fs, root = reader
    assert fs.exists(root + "/vm.vmx") and not fs.exists(root + "/nope")
    assert fs.isdir(root + "/ds5") and not fs.isdir(root + "/vm.vmx")
    assert fs.listdir(root) == ["ds5", "vm-flat.vmdk", "vm.vmx"]
    assert fs.list_files(root) == ["ds5/vm_1.vmdk", "vm-flat.vmdk", "vm.vmx"]
    assert fs.read_text(root + "/vm.vmx") == 'displayName = "vm"\n'
    assert fs.file_size(root + "/vm-flat.vmdk") == 4096


def test_a_command_that_closes_its_output_early_is_still_bounded(shell, tmp_path):
    """A child that closes stdout (its output redirected) and keeps running: the timeout still holds."""
    start = time.monotonic()
    with pytest.raises(TimeoutExpired):
        shell.run(["sh", "-c", 'exec >"$1" 2>&1; sleep 30', "sh", str(tmp_path / "out")], timeout=2)
    assert time.monotonic() - start < 20
