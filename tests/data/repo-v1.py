"""How tests/data/repo-v1/ was made: a repository written by hotvcb before pack version 2
(main at 765102e, 2026-12-02), so tests/test_repo_packv1.py can show that one is still read,
verified, pruned and garbage-collected. Its packs are version 1: named by the SHA-256 of all
their bytes. Made with that commit's hotvcb first on the path:

    git archive 765102e hotvcb | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python3 tests/data/repo-v1.py tests/data/repo-v1

Two backups of VM "web" (the second with two 64 KiB blocks rewritten) and one of VM "gone";
small packs (128 KiB), zlib, GC timing of the tests (60 s backup limit, no settle time). The
disks are made from fixed seeds (disk() below, also used by the test to check restores).
"""

import datetime
import random
import sys

KiB = 1024


def disk(version):
    """The bytes of a 1 MiB disk: text, written zeros, random data, zeros to the end."""
    rnd = random.Random(7)
    data = bytearray(_text(0, 192 * KiB) + bytes(192 * KiB))
    data += rnd.getrandbits(8 * 64 * KiB).to_bytes(64 * KiB, "little")
    data += bytes(1024 * KiB - len(data))
    if version == 2:  # one text block and the random block rewritten
        data[64 * KiB:128 * KiB] = _text(2, 64 * KiB)
        data[384 * KiB:448 * KiB] = rnd.getrandbits(8 * 64 * KiB).to_bytes(64 * KiB, "little")
    if version == "gone":  # no chunk in common with "web"
        data[:192 * KiB] = _text(3, 192 * KiB)
        data[384 * KiB:448 * KiB] = bytes(64 * KiB)
    return bytes(data)


def _text(seed, n):
    return b"".join(b"log line %d of %d: disk says hello\n" % (i, seed) for i in range(n // 20))[:n]


def main(path):
    import os
    import tempfile
    from hotvcb.repo.backend import LocalBackend
    from hotvcb.repo.repository import Repository
    from hotvcb.repo.writer import BackupWriter
    repo = Repository.init(LocalBackend(path), pack_size=128 * KiB, backup_limit=60, settle=0)
    with tempfile.TemporaryDirectory() as tmp:
        for n, (vm, version) in enumerate((("web", 1), ("web", 2), ("gone", "gone"))):
            src = os.path.join(tmp, "disk.raw")
            with open(src, "wb") as f:
                f.write(disk(version))
            w = BackupWriter(repo, vm)
            w.add_disk("disk.raw", src)
            w.add_file(vm + ".vmx", ('displayName = "%s"\n' % vm).encode())
            w.commit(datetime.datetime(2026, 11, 28 + n, 21))
    os.rmdir(os.path.join(path, "tmp"))  # empty: git keeps no empty folder


if __name__ == "__main__":
    main(sys.argv[1])
