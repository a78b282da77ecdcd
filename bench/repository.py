"""Issue 11's repository benchmark: hotvcb's repository vs cp, borg and restic on the same disks.

Two versions of one generated raw disk (8 GiB virtual, 2 GiB of data in 64 regions spread over
it: 40 % text-like, 40 % random, 20 % written zeros; the rest holes; deterministic): the first,
and the second with 1 % of the data changed as scattered 64 KiB writes (aligned, random
content: the way a VM writes; 1 % of the 2 GiB reproduces the issue's borg measurement). Per
tool, each in a fresh repository: the full backup of version 1, the second backup of version 2
(time, and the bytes it adds to the repository), the restore of version 2 (checked with
`qemu-img compare`). Side by side in one run, rounds interleaved (best time of ROUNDS),
warm page cache, so a busy machine slows every tool alike.

| column | backup | restore |
|---|---|---|
| cp --sparse=always | a copy per version | a copy back |
| hotvcb | `hotvcb backup --repo` of a powered-off esxisim VM whose disk is the image | `hotvcb restore --repo` |
| borg | `borg create --chunker-params fixed,4194304 --compression lz4 --sparse` (unencrypted) | `borg extract --sparse` |
| restic | `restic backup` (content-defined chunks, compression auto; restic always encrypts) | `restic restore` |

Targets (issue 11, hotvcb's column): full backup >= 0.8x the speed of cp; the second backup
stores <= 1.5 % of the data and takes <= 0.5x the first; restore >= 0.9x the speed of cp.
Prints one markdown table; exit 1 if hotvcb misses a target or any restore is wrong. Until
`hotvcb backup --repo` exists the hotvcb column says "not available yet" and no target is judged
(see bench/README.md for what the adapter expects). `--quick`: 1 GiB / 256 MiB (ratios, not
the issue's sizes); `-v`: each step as measured. borg and restic come from
scripts/install-bench-deps; a missing one is reported in its column.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from _timing import timed  # noqa: E402

MIB, GIB = 1 << 20, 1 << 30
QUICK = "--quick" in sys.argv[1:]
VERBOSE = "-v" in sys.argv[1:]
VIRTUAL, DATA = (GIB, 256 * MIB) if QUICK else (8 * GIB, 2 * GIB)
REGIONS = 64
WRITE = 64 << 10
CHANGED = DATA // 100
ROUNDS = 2
NAME = "disk.raw"
ENV = dict(os.environ, PYTHONPATH=ROOT)
FAILED = {}  # tool -> what went wrong


def note(text):
    if VERBOSE:
        print("# " + text, file=sys.stderr, flush=True)


def run(argv, cwd=None, env=None):
    r = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, cwd=cwd, env=env or ENV)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, argv[:8])), r.returncode, r.stdout[-2000:]))
    return r.stdout


# -- the images ---------------------------------------------------------------------
def _corpus():
    """1 MiB of made-up words in lines: what logs and text files hold, compressible by zlib and lz4."""
    rnd = random.Random("words")
    words = [bytes(rnd.choice(b"etaoinshrdlucmfwypvbgkqjxz"[:rnd.randint(8, 26)]) for _ in range(rnd.randint(2, 9)))
             for _ in range(2000)]
    out = []
    while sum(map(len, out)) < MIB:
        out.append(b" ".join(rnd.choice(words) for _ in range(rnd.randint(4, 14))) + b"\n")
    return b"".join(out)


CORPUS = _corpus()


def text(rnd, n):
    """n bytes of text-like data: random pieces of the corpus, so no two regions are alike."""
    parts, size = [], 0
    while size < n:
        o = rnd.randrange(len(CORPUS) - 256)
        part = CORPUS[o:o + 32 + rnd.randrange(224)]
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:n]


def region(i):
    """(offset, length, kind) of data region i."""
    length = DATA // REGIONS
    return i * (VIRTUAL // REGIONS), length, ("text", "text", "random", "random", "zero")[i % 5]


def make_image(path):
    with open(path, "wb") as f:
        f.truncate(VIRTUAL)
        for i in range(REGIONS):
            offset, length, kind = region(i)
            f.seek(offset)
            rnd = random.Random(i)
            for done in range(0, length, 8 * MIB):
                n = min(8 * MIB, length - done)
                f.write(bytes(n) if kind == "zero" else text(rnd, n) if kind == "text" else rnd.randbytes(n))


def change(path):
    """The second version: 1 % of the data rewritten in distinct 64 KiB-aligned places inside the
    data regions."""
    rnd = random.Random("second")
    slots = DATA // REGIONS // WRITE
    with open(path, "r+b") as f:
        for slot in rnd.sample(range(REGIONS * slots), CHANGED // WRITE):
            f.seek(region(slot // slots)[0] + slot % slots * WRITE)
            f.write(rnd.randbytes(WRITE))


def allocated(path):
    """Bytes a file or folder takes on disk (holes not counted)."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(path) for f in files)


def found(folder):
    """The restored image: borg and restic recreate the source path below their target."""
    for d, _, files in os.walk(folder):
        if NAME in files:
            return os.path.join(d, NAME)
        for f in files:
            if f.endswith("-flat.vmdk"):
                return os.path.join(d, f)
    raise RuntimeError("no restored disk under %s" % folder)


# -- the tools: init (untimed), backup(version folder), restore(into folder) ----------------
class Cp:
    label = "cp --sparse=always"
    missing = None

    def __init__(self, repo):
        self.repo = repo
        os.makedirs(repo)
        self.n = 0

    def backup(self, src):
        self.n += 1
        run(["cp", "--sparse=always", os.path.join(src, NAME), os.path.join(self.repo, "v%d.raw" % self.n)])

    def restore(self, dst):
        run(["cp", "--sparse=always", os.path.join(self.repo, "v%d.raw" % self.n), os.path.join(dst, NAME)])


class Borg:
    label = "borg"
    missing = None if shutil.which("borg") else "borg not installed (scripts/install-bench-deps)"

    def __init__(self, repo):
        self.repo = repo
        self.env = dict(os.environ, BORG_BASE_DIR=repo + "-home", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        run(["borg", "init", "--encryption", "none", repo], env=self.env)
        self.n = 0

    def backup(self, src):
        self.n += 1
        run(["borg", "create", "--chunker-params", "fixed,4194304", "--compression", "lz4", "--sparse",
             "%s::v%d" % (self.repo, self.n), NAME], cwd=src, env=self.env)

    def restore(self, dst):
        run(["borg", "extract", "--sparse", "%s::v%d" % (self.repo, self.n)], cwd=dst, env=self.env)

    @classmethod
    def version(cls):
        return run(["borg", "--version"]).split()[-1] + " (fixed 4 MiB chunks, lz4)"


class Restic:
    label = "restic"
    missing = None if shutil.which("restic") else "restic not installed (scripts/install-bench-deps)"

    def __init__(self, repo):
        self.repo = repo
        self.env = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=repo + "-cache")
        run(["restic", "init", "--repo", repo], env=self.env)

    def backup(self, src):
        run(["restic", "backup", "--repo", self.repo, NAME], cwd=src, env=self.env)

    def restore(self, dst):
        run(["restic", "restore", "latest", "--repo", self.repo, "--target", dst], env=self.env)

    @classmethod
    def version(cls):
        return run(["restic", "version"]).split()[1] + " (content-defined chunks, compression auto)"


class Hotvcb:
    """The adapter: hotvcb's repository through its CLI on a simulated ESXi host (bench/README.md)."""
    label = "hotvcb"
    host = None
    missing = None

    def __init__(self, repo):
        from esxisim import Host
        from esxisim import disks as simdisks
        cls = type(self)
        if cls.host is None:
            cls.host = Host.create(os.path.join(os.path.dirname(repo), "esx"), crond=False)
            cls.host.add_datastore("datastore1", 4 * VIRTUAL, vmfs=6)
            cls.host.create_vm("bench", "datastore1", [{"size": "1M"}])
            simdisks.create_base(cls.host.real("/vmfs/volumes/datastore1/bench/bench.vmdk"), VIRTUAL, "thin")
        self.repo = repo
        self.n = 0

    @classmethod
    def available(cls):
        """The CLI has what the adapter calls: `backup --repo` and `restore --repo`."""
        for cmd in ("backup", "restore"):
            r = subprocess.run([sys.executable, "-m", "hotvcb", cmd, "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, env=ENV, cwd=ROOT)
            if "--repo" not in r.stdout:
                return "not available yet (no `hotvcb %s --repo`)" % cmd
        return None

    def hotvcb(self, *args):
        return run([sys.executable, "-m", "esxisim", "shell", self.host.root, "--", "env", "PYTHONPATH=" + ROOT,
                    "/bin/python", "-m", "hotvcb"] + list(args))

    def backup(self, src):
        flat = self.host.real("/vmfs/volumes/datastore1/bench/bench-flat.vmdk")
        os.unlink(flat)
        os.link(os.path.join(src, NAME), flat)  # the powered-off VM's disk is now this version
        self.hotvcb("backup", "--repo", self.repo, "-m", "bench", "-w", self.repo + "-work")

    def restore(self, dst):
        self.n += 1
        name = "restored-%d" % self.n
        self.hotvcb("restore", "--repo", self.repo, "--latest", "bench", "--datastore", "datastore1", "--name", name)
        folder = self.host.real("/vmfs/volumes/datastore1/" + name)
        os.rename(found(folder), os.path.join(dst, NAME))
        run([sys.executable, "-m", "esxisim", "shell", self.host.root, "--", "/bin/vim-cmd", "vmsvc/unregister",
             self.host.vmid_by_name(name)])
        shutil.rmtree(folder)


def measure(tool, tmp, v1, v2, n):
    """One round of one tool in a fresh repository: the three times and the bytes stored."""
    repo = os.path.join(tmp, "%s-%d" % (tool.label.split()[0], n))
    t = tool(repo)
    out = {"full": timed(lambda: t.backup(v1))}
    out["stored1"] = allocated(repo)
    out["second"] = timed(lambda: t.backup(v2))
    out["stored2"] = allocated(repo) - out["stored1"]
    dst = repo + "-restored"
    os.makedirs(dst)
    out["restore"] = timed(lambda: t.restore(dst))
    restored = found(dst)
    same = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", restored, os.path.join(v2, NAME)])
    out["same"] = same.returncode == 0
    note("%s round %d: %s" % (tool.label, n, {k: round(v, 2) for k, v in out.items()}))
    for path in (repo, dst, repo + "-home", repo + "-cache", repo + "-work"):
        shutil.rmtree(path, ignore_errors=True)
    return out


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="hotvcb-bench-repository-")
    tools = [Cp, Hotvcb, Borg, Restic]
    if Hotvcb.missing is None:
        Hotvcb.missing = Hotvcb.available()
    try:
        v1, v2 = os.path.join(tmp, "v1"), os.path.join(tmp, "v2")
        os.makedirs(v1)
        os.makedirs(v2)
        make_image(os.path.join(v1, NAME))
        run(["cp", os.path.join(v1, NAME), os.path.join(v2, NAME)])
        change(os.path.join(v2, NAME))
        note("images made: %s" % allocated(os.path.join(v1, NAME)))
        results = {}
        for n in range(ROUNDS):
            for tool in tools:
                # borg's and restic's times are long next to the machine's noise: one round each
                if tool.missing is None and not (n and tool in (Borg, Restic)):
                    try:
                        r = measure(tool, tmp, v1, v2, n)
                    except RuntimeError as err:  # reported in its column; the other tools still run
                        FAILED[tool] = str(err).replace("|", "/").replace("\n", " ")[:400]
                        tool.missing = "failed (see errors)"
                        results.pop(tool, None)
                        continue
                    old = results.setdefault(tool, r)
                    for key in ("full", "second", "restore"):
                        old[key] = min(old[key], r[key])
                    old["same"] = old["same"] and r["same"]
        return report(tools, results)
    finally:
        if Hotvcb.host is not None:
            Hotvcb.host.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def report(tools, results) -> int:
    cp = results[Cp]
    heads = [t.label + (" " + t.version() if t in results and hasattr(t, "version") else "") for t in tools]
    rows = [("what, %d GiB / %d MiB data" % (VIRTUAL // GIB, DATA // MIB), heads, "target (hotvcb)")]

    def cells(fmt):
        return [t.missing.split(" (")[0] if t not in results else fmt(results[t]) for t in tools]

    mib = lambda n: "%.0f MiB" % (n / MIB)  # noqa: E731
    rows += [
        ("full backup", cells(lambda r: "%.2f s" % r["full"]), ""),
        ("full backup speed vs cp", cells(lambda r: "%.2fx" % (cp["full"] / r["full"])), ">= 0.8x"),
        ("stored by the full backup", cells(lambda r: mib(r["stored1"])), ""),
        ("second backup (1 % changed), x the first", cells(lambda r: "%.2f s (x%.2f)" % (r["second"], r["second"] / r["full"])),
         "<= x0.5"),
        ("stored by the second backup, % of the data",
         cells(lambda r: "+%s (%.1f %%)" % (mib(r["stored2"]), 100.0 * r["stored2"] / DATA)), "<= 1.5 %"),
        ("restore", cells(lambda r: "%.2f s" % r["restore"]), ""),
        ("restore speed vs cp", cells(lambda r: "%.2fx" % (cp["restore"] / r["restore"])), ">= 0.9x"),
        ("restored disk = version 2 (qemu-img compare)", cells(lambda r: "yes" if r["same"] else "**no**"), "yes"),
    ]
    if FAILED:
        rows.append(("errors", [FAILED.get(t, "") for t in tools], ""))
    ok = all(r["same"] for r in results.values()) and not FAILED
    ours = results.get(Hotvcb)
    if ours:
        met = [ours["full"] <= cp["full"] / 0.8, ours["second"] <= 0.5 * ours["full"],
               ours["stored2"] <= 0.015 * DATA, ours["restore"] <= cp["restore"] / 0.9]
        verdict = "met" if all(met) else "**missed**: " + ", ".join(
            w for w, m in zip(("full speed", "second time", "second bytes", "restore speed"), met) if not m)
        ok = ok and all(met)
    else:
        verdict = "not judged: hotvcb " + str(Hotvcb.missing)
    print("| %s | %s | %s |" % (rows[0][0], " | ".join(rows[0][1]), rows[0][2]))
    print("|" + "---|" * (len(tools) + 2))
    for what, values, target in rows[1:]:
        print("| %s | %s | %s |" % (what, " | ".join(values), target))
    print("| hotvcb's targets | %s | |" % " | ".join([verdict] + [""] * (len(tools) - 1)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
