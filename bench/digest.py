"""Digest cost follows the data, not the virtual size (issue 8, manifest version 2).

Thin (sparse) files made with truncate + writes in a temp dir, warm page cache,
each measurement the best of a few interleaved runs:

* verify of 4 GiB virtual / 1 GiB data vs `openssl dgst -sha256` of the same
  1 GiB as a plain file                           target: >= 0.9x openssl
* verify of 32 GiB virtual / 100 MiB data vs 1 GiB / the same 100 MiB
                                                  target: <= 2x
* the version-1 digest (whole-file SHA-256 + a SHA-256 per MiB, holes read)
  on the same files, for the record (best of 2: a first read of holes fills
  the page cache with zero pages and is slower still). On 32 GiB it takes most
  of a minute, so it is timed on the first 1 GiB and scaled (the rest is
  holes, read at the same rate); `--slow` times it whole.

Prints a markdown table; exit 1 if a target is missed. Needs `openssl`.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hotvcb.jobs.verify import verify_folder  # noqa: E402
from hotvcb.localshell import LocalShell  # noqa: E402
from hotvcb.store import manifest  # noqa: E402
from _timing import best  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30


def v1_digest(path, limit=None):
    """Version-1 digest as sealed before manifest v2 (store/manifest.py at da41917)."""
    whole = hashlib.sha256()
    parts = []
    done = 0
    with open(path, "rb") as f:
        while limit is None or done < limit:
            block = f.read(MIB)
            if not block:
                break
            whole.update(block)
            parts.append(hashlib.sha256(block).hexdigest()[:16])
            done += len(block)
    return whole.hexdigest(), "".join(parts)


def make_sparse(path, size, extents, pattern):
    """`extents` data runs of len(pattern)*k spread evenly over a `size`-byte hole."""
    with open(path, "wb") as f:
        f.truncate(size)
        step = size // len(extents) // MIB * MIB
        for i, length in enumerate(extents):
            f.seek(i * step)
            left = length
            while left:
                chunk = pattern[: min(left, len(pattern))]
                f.write(chunk)
                left -= len(chunk)


def make_backup(folder, name, size, extents, pattern):
    os.makedirs(folder)
    path = os.path.join(folder, name)
    make_sparse(path, size, extents, pattern)
    entry = manifest.digest_file(LocalShell(), path).entry()
    with open(os.path.join(folder, manifest.MANIFEST), "w") as f:
        f.write(manifest.dumps({"vm": "bench", "result": "ok", "files": {name: entry}}))
    with open(os.path.join(folder, "STATUS.ok"), "w") as f:
        f.write("ok\n")
    return path


def dense_copy(src, dst):
    """The data of a sparse file as a plain file (what `openssl dgst` gets to read)."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        off = 0
        while off < size:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, off, os.SEEK_HOLE)
            f.seek(off)
            while off < end:
                out.write(f.read(min(8 * MIB, end - off)))
                off = min(end, off + 8 * MIB)



def verify(folder):
    def run():
        res = verify_folder(LocalShell(), folder, record=False)
        assert res.status == "ok", res.message
    return run


def openssl(path):
    return lambda: subprocess.run(["openssl", "dgst", "-sha256", path], check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    slow = "--slow" in sys.argv[1:]
    tmp = tempfile.mkdtemp(prefix="hotvcb-bench-digest-")
    try:
        pattern = os.urandom(16 * MIB)
        a_dir, b_dir, c_dir = (os.path.join(tmp, n) for n in ("a", "b", "c"))
        a = make_backup(a_dir, "a-flat.vmdk", 4 * GIB, [16 * MIB] * 64, pattern)  # 4 GiB / 1 GiB
        b = make_backup(b_dir, "b-flat.vmdk", 32 * GIB, [MIB] * 100, pattern)  # 32 GiB / 100 MiB
        c = make_backup(c_dir, "c-flat.vmdk", GIB, [MIB] * 100, pattern)  # 1 GiB / 100 MiB
        a_data, b_data = os.path.join(tmp, "a.data"), os.path.join(tmp, "b.data")
        dense_copy(a, a_data)
        dense_copy(b, b_data)
        assert os.path.getsize(a_data) == GIB and os.path.getsize(b_data) == 100 * MIB

        new_a, ssl_a = best([verify(a_dir), openssl(a_data)])
        new_b, new_c, ssl_b = best([verify(b_dir), verify(c_dir), openssl(b_data)], runs=9)  # ~0.1 s each: noisy
        # best of 2: the first read of a hole fills the page cache with zero pages, slower
        old_a, old_c = best([lambda: v1_digest(a), lambda: v1_digest(c)], runs=2)
        if slow:
            (old_b,) = best([lambda: v1_digest(b)], runs=1)
            old_b_note = ""
        else:
            (old_1g,) = best([lambda: v1_digest(b, limit=GIB)], runs=2)
            old_b, old_b_note = old_1g * 32, " (first 1 GiB x 32)"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratio_ssl = ssl_a / new_a
    ratio_virtual = new_b / new_c
    rows = [
        ("verify 4 GiB / 1 GiB data", "%.2f s" % new_a, "openssl dgst -sha256 of the 1 GiB: %.2f s" % ssl_a,
         "%.2fx openssl speed" % ratio_ssl, ">= 0.9x", ratio_ssl >= 0.9),
        ("verify 32 GiB / 100 MiB data", "%.2f s" % new_b, "1 GiB / same 100 MiB: %.2f s" % new_c,
         "x%.2f" % ratio_virtual, "<= x2", ratio_virtual <= 2.0),
        ("verify 32 GiB / 100 MiB data", "%.2f s" % new_b, "openssl dgst -sha256 of the 100 MiB: %.2f s" % ssl_b,
         "%.2fx openssl speed" % (ssl_b / new_b), "-", None),
        ("v1 digest 4 GiB / 1 GiB data", "%.2f s" % old_a, "v2 verify: %.2f s" % new_a,
         "v2 %.1fx faster" % (old_a / new_a), "-", None),
        ("v1 digest 32 GiB / 100 MiB data", "%.1f s%s" % (old_b, old_b_note), "v2 verify: %.2f s" % new_b,
         "v2 %.0fx faster" % (old_b / new_b), "-", None),
        ("v1 digest 1 GiB / 100 MiB data", "%.2f s" % old_c, "v2 verify: %.2f s" % new_c,
         "v2 %.1fx faster" % (old_c / new_c), "-", None),
    ]
    print("| what | hotvcb | reference | ratio | target | met |")
    print("|---|---|---|---|---|---|")
    for what, ours, ref, ratio, target, met in rows:
        print("| %s | %s | %s | %s | %s | %s |" % (what, ours, ref, ratio, target,
                                                  "-" if met is None else ("yes" if met else "**no**")))
    return 0 if all(r[5] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
