"""The storage-backend contract (docs/repository.md), run against every backend.

Today that is the local folder backend; an object-store backend joins
BACKENDS and must pass the same suite.
"""

import os

import pytest

from hotvcb.errors import RepoError
from hotvcb.repo.backend import LocalBackend, NotFound


def local(tmp_path):
    return LocalBackend(str(tmp_path / "objects"))


BACKENDS = [local]


@pytest.fixture(params=BACKENDS, ids=lambda f: f.__name__)
def backend(request, tmp_path):
    return request.param(tmp_path)


def test_put_new_is_put_if_absent_and_never_changes_an_object(backend):
    assert backend.put_new("packs/ab/x", b"first")
    assert not backend.put_new("packs/ab/x", b"second")
    assert backend.get("packs/ab/x") == b"first"


def test_get_reads_ranges_and_a_missing_object_is_not_found(backend):
    backend.put_new("a", b"0123456789")
    assert backend.get("a", 3, 4) == b"3456"
    assert backend.get("a", 8, 100) == b"89"  # short only at the end
    with pytest.raises(NotFound):
        backend.get("missing")


def test_an_upload_is_invisible_until_committed_and_gone_when_discarded(backend):
    up = backend.new_upload()
    up.write(b"part one ")
    assert backend.list("") == [] and backend.stat("big") is None
    up.write(b"part two")
    assert backend.put_new_file("big", up)
    assert backend.get("big") == b"part one part two"
    up2 = backend.new_upload()
    up2.write(b"x")
    up2.discard()
    assert [i.name for i in backend.list("")] == ["big"]
    other = backend.new_upload()
    other.write(b"y")
    assert not backend.put_new_file("big", other)  # put-if-absent holds for uploads too
    assert backend.get("big") == b"part one part two"


def test_list_stat_and_delete(backend):
    for name in ("snapshots/b", "snapshots/a", "indexes/a.0"):
        backend.put_new(name, name.encode())
    infos = backend.list("snapshots/")
    assert [i.name for i in infos] == ["snapshots/a", "snapshots/b"] and infos[0].size == len("snapshots/a")
    assert abs(infos[0].mtime - backend.now()) < 60
    backend.delete("snapshots/a")
    backend.delete("snapshots/a")  # idempotent
    assert backend.stat("snapshots/a") is None and backend.stat("snapshots/b").size == len("snapshots/b")
    assert [i.name for i in backend.list("snapshots/")] == ["snapshots/b"]


def test_forget_uploads_discards_only_old_ones(tmp_path):
    backend = LocalBackend(str(tmp_path))
    old, young = backend.new_upload(), backend.new_upload()
    old.write(b"o")
    young.write(b"y")
    os.utime(old.path, (1, 1))
    assert backend.forget_uploads(3600) == 1
    assert not os.path.exists(old.path) and os.path.exists(young.path)
    assert backend.put_new_file("y", young) and backend.get("y") == b"y"


def test_an_entry_list_cannot_stat_is_an_error_naming_it_not_skipped(tmp_path):
    """A symlink loop under packs/: skipping it would hide a pack from GC and verify alike, and an OSError
    would reach the user as an internal error (or be blamed on a restore's target)."""
    backend = LocalBackend(str(tmp_path))
    backend.put_new("packs/ab/good", b"x")
    os.symlink("loop", str(tmp_path / "packs" / "ab" / "loop"))
    with pytest.raises(RepoError, match="packs/ab/loop") as caught:
        backend.list("packs/")
    assert not isinstance(caught.value, NotFound)
    assert [i.name for i in backend.list("snapshots/")] == []  # other prefixes list as before


def test_names_cannot_escape_the_repository(backend):
    with pytest.raises(Exception, match="bad object name"):
        backend.get("../etc/passwd")


@pytest.mark.parametrize("kind", ["dir", "symlink", "fifo"])
def test_forget_uploads_leaves_what_is_no_upload(tmp_path, kind):
    """Only a writer's temp files are uploads: whatever else lies in tmp/, however old, stays, and GC goes on."""
    backend = LocalBackend(str(tmp_path))
    old = backend.new_upload()
    os.utime(old.path, (1, 1))
    odd = str(tmp_path / "tmp" / "odd")
    {"dir": os.mkdir, "symlink": lambda p: os.symlink("odd", p), "fifo": os.mkfifo}[kind](odd)
    os.utime(odd, (1, 1), follow_symlinks=False)
    assert backend.forget_uploads(3600) == 1
    assert os.path.lexists(odd) and not os.path.exists(old.path)


def test_a_folder_list_cannot_walk_into_is_an_error_naming_it_not_skipped(tmp_path):
    """A symlink to a folder (its packs moved to another disk and linked back): a walk does not follow it (a
    loop would never end), so list names it rather than hide the objects behind it."""
    backend = LocalBackend(str(tmp_path / "repo"))
    backend.put_new("packs/ab/ab01", b"x")
    os.rename(str(tmp_path / "repo" / "packs" / "ab"), str(tmp_path / "elsewhere"))
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "repo" / "packs" / "ab"))
    with pytest.raises(RepoError, match="packs/ab .*symlink to a folder"):
        backend.list("packs/")
    assert backend.get("packs/ab/ab01") == b"x"  # reads go through it: only the listing could not see it
