"""The fixes of outside round s33 (restore) beyond what test_outsider_s33restore.py pins: the VM folder's
place taken by a file or a dangling symlink is named for what it is, a backup still being written is
not called missing, a `-partial` one says which it is (running, or left by a dead run), `list` of a backup volume that is not there is an error, and the dry run's tally
of what earlier lines take (restore_tally.Tally)."""

import os
import shutil

import pytest

from simhost import VOLUME, host_python, hotvcb, make_host, needs_root, write_conf

pytestmark = [needs_root]
VM = "tally"


def out(r):
    return (r.stdout or "") + (r.stderr or "")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A host with VM "tally" backed up once: (host, conf, backup path)."""
    host = make_host(tmp_path_factory.mktemp("s33fixes") / "host")
    host.create_vm(VM, "datastore1", [{"size": "1M"}], power="off")
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", VM, "-g", conf)
    assert r.returncode == 0, out(r)
    (name,) = [e for e in os.listdir(host.real(VOLUME + "/" + VM)) if e.startswith(VM + "-")]
    yield host, conf, "%s/%s/%s" % (VOLUME, VM, name)
    host.stop()


@pytest.mark.parametrize("what", ["file", "dangling symlink"])
def test_the_vm_folders_place_taken_by_no_folder_is_named_for_what_it_is(site, what):
    host, _conf, bk = site
    name = "taken by " + what
    place = host.real("/vmfs/volumes/ds5/" + name)
    if what == "file":
        with open(place, "w") as f:
            f.write("x")
    else:
        os.symlink("/vmfs/volumes/ds5/nowhere", place)
    try:
        r = hotvcb(host, "restore", bk, "--datastore", "ds5", "--name", name)
    finally:
        os.unlink(place)
    (err,) = [l for l in out(r).splitlines() if "error" in l]
    assert r.returncode == 6 and "already exists" not in err, out(r)
    assert ("is a file, not a folder" if what == "file" else "which does not exist") in err, out(r)


def test_a_backup_still_being_written_is_not_called_missing(site):
    host, _conf, bk = site
    final = bk[: -len("2026-01-01_00-00-00")] + "2030-01-01_00-00-00"
    shutil.copytree(host.real(bk), host.real(final + "-partial"))
    try:
        r = hotvcb(host, "restore", final, "--datastore", "ds5", "--name", "early")
    finally:
        shutil.rmtree(host.real(final + "-partial"))
    assert r.returncode == 6 and "does not exist yet" in out(r) and final + "-partial" in out(r), out(r)


@pytest.mark.parametrize("record", ["dead run", "none"])
def test_a_partial_backup_says_whether_its_run_died(site, record):
    """`restore <VM>-<time>-partial` said "being written, or left by a run that died"; its owner record tells."""
    host, _conf, bk = site
    partial = bk[: -len("2026-01-01_00-00-00")] + "2031-01-01_00-00-00-partial"
    shutil.copytree(host.real(bk), host.real(partial))
    for status in ("STATUS.ok", "STATUS.warn", "STATUS.error"):
        if os.path.exists(host.real(partial + "/" + status)):
            os.unlink(host.real(partial + "/" + status))
    if record == "dead run":  # a record of a process of the host that has ended
        r = host_python(host, "-c", "from hotvcb.runid import RunId; print(RunId.new().with_process_start().text())")
        assert r.returncode == 0, r.stderr
        with open(host.real(partial + "/.hotvcb-owner"), "w") as f:
            f.write(r.stdout)
    try:
        r = hotvcb(host, "restore", partial, "--datastore", "ds5", "--name", "half")
    finally:
        shutil.rmtree(host.real(partial))
    assert r.returncode == 6, out(r)
    said = "left by a run that died (run " if record == "dead run" else "no owner record to say which"
    assert said in out(r), out(r)


def test_list_of_a_backup_volume_that_is_not_there_is_an_error(site):
    host, _conf, _bk = site
    conf = write_conf(host, name="gone.conf", VM_BACKUP_VOLUME="/vmfs/volumes/nfsbackup/hotvcb")
    r = hotvcb(host, "list", "-g", conf)
    assert r.returncode == 1 and "no datastore nfsbackup is mounted" in r.stderr, out(r)
    assert "no backups" not in out(r), out(r)


def test_the_tally_counts_room_per_datastore_and_folders_by_path():
    from hotvcb.jobs.restore_tally import Tally
    from hotvcb.restorefile import RestoreRequest

    tally = Tally(lambda path: path)  # the host's resolution: here, paths as written
    req = RestoreRequest("/b", "/vmfs/volumes/ds5", "thin", "a", where="f:1")
    tally.hold(req, "/vmfs/volumes/ds5/a", 3 << 20)
    assert "f:1 restores first" in tally.taken("/vmfs/volumes/ds5/a") and tally.taken("/vmfs/volumes/ds6/a") is None
    assert tally.left("/vmfs/volumes/ds5/sub/", 5 << 20) == 2 << 20  # another folder on the same datastore
    assert tally.left("/vmfs/volumes/ds6", 5 << 20) == 5 << 20 and tally.left("/vmfs/volumes/ds5", None) is None
    assert tally.left("/vmfs/volumes/ds5", 1 << 20) == 0


def test_the_tally_knows_a_datastore_by_the_path_the_host_resolves():
    """One line names ds5, the next /vmfs/volumes/<uuid>: one folder, one free space (round 2, defects 1-2)."""
    from hotvcb.jobs.restore_tally import Tally
    from hotvcb.restorefile import RestoreRequest

    tally = Tally(lambda path: path.replace("/vmfs/volumes/ds5", "/vmfs/volumes/5f00-aa"))
    tally.hold(RestoreRequest("/b", "/vmfs/volumes/ds5", "thin", "a", where="f:1"), "/vmfs/volumes/ds5/a", 3 << 20)
    assert "f:1 restores first" in tally.taken("/vmfs/volumes/5f00-aa/a")
    assert tally.left("/vmfs/volumes/5f00-aa", 5 << 20) == 2 << 20


def test_a_block_digest_list_that_differs_from_the_data_is_told():
    from hotvcb.store.datasize import list_differs

    entry = {"size": 2, "blocks": {"size": 1048576, "hex": 16, "digests": "0" * 16}}
    assert list_differs(entry, "1" * 16, 1048576) and not list_differs(entry, "0" * 16, 1048576)
    assert not list_differs(entry, "1" * 16, 65536)  # another block size: not comparable, the proof says
