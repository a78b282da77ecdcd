"""Helpers for the repository tests: disks with holes and mixed data, a stand-in
for the keep rules, ageing a repository, a pack hidden from the listing while a
GC mark waits and the CLI's restore or verify that waits for it, and a command
line so a test can run a backup, prune or GC in a process of its own (and
SIGKILL it).

    python3 tests/repotool.py backup REPO VM DISK [DISK...]
    python3 tests/repotool.py prune REPO KEEP_LAST
    python3 tests/repotool.py gc REPO
"""

import collections
import datetime
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from hotvcb.repo import gc, prune  # noqa: E402
from hotvcb.repo.backend import LocalBackend  # noqa: E402
from hotvcb.repo.format import dumps  # noqa: E402
from hotvcb.repo.repository import CONDEMNED, PACKS, Repository  # noqa: E402
from hotvcb.repo.writer import BackupWriter  # noqa: E402

MiB = 1 << 20
HOUR = 3600  # past the test repositories' grace period (60 s + 2 x 0 s), and a settle time no test waits out (a
             # wait that began and never ends is caught by a test's timeout)
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
PYTHON = PY38 if os.path.exists(PY38) else sys.executable  # the ESXi host's python where pyenv has it
Decision = collections.namedtuple("Decision", "backup kept rule")


def keep_last(backups, keep_last=0, **_other):
    """A tiny stand-in for retention.select (keep-last only), in its API."""
    newest = sorted(backups, key=lambda b: b.time, reverse=True)[:keep_last]
    return [Decision(b, b in newest, "keep-last" if b in newest else None) for b in backups]


def make_disk(path, size=24 * MiB, seed=1, regions=12):
    """A sparse disk: holes, text-like data, random data and written zeros, size not chunk-aligned."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(regions):
            f.seek(rnd.randrange(0, size - MiB) // 4096 * 4096)
            kind = i % 3
            if kind == 0:
                f.write(b"".join(b"line %d of file %d: the quick brown fox\n" % (n, i) for n in range(20000))[:MiB])
            elif kind == 1:
                f.write(rnd.getrandbits(8 * MiB).to_bytes(MiB, "little"))
            else:
                f.write(bytes(MiB))
        f.seek(size - 100)
        f.write(b"tail" * 25)


def scatter(path, writes, seed=2, align=64 * 1024):
    """Overwrite `writes` random 64 KiB blocks, as a VM writes."""
    rnd = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(writes):
            f.seek(rnd.randrange(0, size - 65536) // align * align)
            f.write(rnd.getrandbits(8 * 65536).to_bytes(65536, "little"))


def age(repo_path, seconds):
    """Make every object in the repository `seconds` older (GC's grace period counts by mtime)."""
    for folder, _dirs, files in os.walk(repo_path):
        for name in files:
            p = os.path.join(folder, name)
            st = os.stat(p)
            os.utime(p, (st.st_atime - seconds, st.st_mtime - seconds))


def new_repo(path, **kw):
    kw.setdefault("backup_limit", 60)
    kw.setdefault("settle", 0)
    kw.setdefault("pack_size", 2 * MiB)  # several packs even for small test disks
    return Repository.init(LocalBackend(str(path)), **kw)


def backup(repo, vm, *disks, when=None):
    w = BackupWriter(repo, vm)
    try:
        for d in disks:
            w.add_disk(os.path.basename(str(d)), str(d))
        w.add_file(vm + ".vmx", ('displayName = "%s"\n' % vm).encode())
        return w.commit(when)
    finally:
        w.abort()


def record_path(repo_path, snap):
    """Where a backup's snapshot record lies in the repository at repo_path."""
    return os.path.join(str(repo_path), "snapshots", snap.id)


def edit_record(repo_path, snap, edit):
    """Rewrite a snapshot record as a bug or a hand edit would leave it (records are immutable to hotvcb):
    `edit(record)` changes the parsed JSON in place."""
    path = record_path(repo_path, snap)
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    edit(record)
    os.chmod(path, 0o644)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)


def two_vms(tmp_path):
    """A repository at tmp_path/repo where `web` is backed up twice (its first backup's chunks overwritten
    since) and `db` once (disks of 4 MiB under tmp_path), all older than GC's grace: (repo, web's older
    snapshot, web's newer, db's)."""
    repo = new_repo(tmp_path / "repo")
    web, db = tmp_path / "web.raw", tmp_path / "db.raw"
    make_disk(web, size=4 << 20, seed=3)
    make_disk(db, size=4 << 20, seed=4)
    old = backup(repo, "web", web, when=datetime.datetime(2026, 11, 30, 21))
    make_disk(web, size=4 << 20, seed=5)
    new = backup(repo, "web", web, when=datetime.datetime(2026, 12, 1, 21))
    dbsnap = backup(repo, "db", db, when=datetime.datetime(2026, 12, 1, 21))
    age(tmp_path / "repo", 3 * 3600)
    return repo, old, new, dbsnap


def same(a, b):
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(a), str(b)])
    return r.returncode == 0


def corrupt_one_chunk(repo_path, repo, snap):
    """Flip a byte inside the first chunk the backup names; returns that chunk's digest."""
    digest = repo.disk_index(snap.disks[0]).entries[0][1]
    corrupt_chunk(repo_path, repo, repo.chunk_map()[digest].pack, digest)
    return digest


def corrupt_chunk(repo_path, repo, pack, digest):
    """Flip a byte inside `digest`'s copy in `pack` (bit rot in that copy only)."""
    (blob,) = [b for b in repo.pack_blobs(pack, repo.backend.stat(pack).size) if b.digest == digest]
    with open(os.path.join(str(repo_path), pack), "r+b") as f:
        f.seek(blob.offset + blob.stored_len // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))


# --- a pack this host's listing lacks, and the restore or verify that waits for it (repo/settle.py) ------------

WAITING = "waiting up to"  # the line restore and verify say once a wait for a lagging listing begins


def first_pack(repo, snap):
    """The pack holding the first chunk of the backup's first disk."""
    return repo.chunk_map()[repo.disk_index(snap.disks[0]).entries[0][1]].pack


def digests_of(repo, pack):
    """The chunks `pack` holds, in hex: what a line naming a lost one shows."""
    return {blob.digest.hex() for blob in repo.pack_blobs(pack, repo.backend.stat(pack).size)}


def write_mark(repo_path, name="1000-deadbeef", **fields):
    """A GC's mark `condemned/<name>` holding `fields` (`packs`: those to delete); returns its object name."""
    mark = CONDEMNED + name
    assert LocalBackend(str(repo_path)).put_new(mark, dumps(dict({"format": "hotvcb-condemned", "version": 1},
                                                                 **fields)))
    return mark


def mark_waiting(repo_path):
    """A GC on another host is at work: its mark of packs to delete waits (naming one no listing names, as
    it may)."""
    write_mark(repo_path, "1000-0badf00d", packs=[PACKS + "00/" + "0" * 64])


def hide(repo_path, pack, aside):
    """Move `pack` out of the repository to `aside`: what a listing that does not show it yet looks like.
    Returns the call that puts it back (the listing caught up)."""
    inside = os.path.join(str(repo_path), pack)
    os.rename(inside, str(aside))
    return lambda: os.rename(str(aside), inside)


def restore_or_verify(command, tmp_path, snap):
    """The command line of a restore of `snap` into tmp_path/restored, or of a verify, of the repository at
    tmp_path/repo."""
    if command == "restore":
        return ("restore", "--repo", tmp_path / "repo", snap.id, "--to", tmp_path / "restored")
    return ("verify", "--repo", tmp_path / "repo")


def start(*args):
    """The CLI in a process of its own, its output (stdout and stderr) read line by line."""
    return subprocess.Popen([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))


def until_waiting(proc):
    """The output up to and including the line that says the command waits (fails if it ends first)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if WAITING in line:
            return "".join(seen)
    proc.wait(timeout=60)
    raise AssertionError("ended (%s) without waiting:\n%s" % (proc.returncode, "".join(seen)))


def finish(proc, timeout=120):
    """(exit code, the rest of its output); killed if it has not ended within `timeout`."""
    try:
        rest, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, rest


def main(argv):
    repo = Repository.open(LocalBackend(argv[1]))
    if argv[0] == "backup":
        print(backup(repo, argv[2], *argv[3:]).id)
    elif argv[0] == "prune":
        prune.prune(repo, prune.plan(repo, {"last": int(argv[2])}, select=keep_last))
    elif argv[0] == "gc":
        gc.collect(repo)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def cli(*args, timeout=60):
    """hotvcb's CLI run by the host's python, as a user runs it."""
    return subprocess.run([PYTHON, "-m", "hotvcb"] + [str(a) for a in args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=dict(os.environ, PYTHONPATH=ROOT))


def one_clear_line(r):
    """A refusal is one `hotvcb: error:` line, never a traceback or an internal error."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    assert [l for l in r.stderr.splitlines() if l.startswith("hotvcb: error:")], out
