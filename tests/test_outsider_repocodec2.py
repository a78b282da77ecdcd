"""An outsider's attacks on the repository's zlib probe-as-stream-start, the raw inflate into a sized
buffer, the restore's workers writing what they checked, and restore --repo --datastore asking its host
questions beside the copy: damaged zlib chunks of every kind, RAW chunks of the wrong length, empty chunks
and chunks at the probe's edges, data that defeats the probe, restores stopped, filling their disk, run
twice at once, and a host whose questions fail while the disk is written."""

import hashlib
import os
import random
import shlex
import signal
import subprocess
import sys
import time
import zlib

import pytest
from repotool import MiB, backup, cli, make_disk, new_repo, one_clear_line, same
from simhost import hotvcb as host_hotvcb
from simhost import needs_root, wrap_tool, write_conf
from test_host_commands_e2e import hostd_fails

from hotvcb.errors import RepoError
from hotvcb.repo import codec
from hotvcb.repo.format import RAW, ZLIB

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def text(n, seed=0):
    return b"".join(b"line %d of file %d: the quick brown fox\n" % (i, seed) for i in range(n // 20 + 1))[:n]


def noise(n, seed=0):
    return random.Random(seed).getrandbits(8 * n).to_bytes(n, "little") if n else b""


RAW64 = text(65536)
STREAM = zlib.compress(RAW64)
DIGEST = hashlib.sha256(RAW64).digest()


def decoded_or_refused(stored, raw=RAW64, method=ZLIB):
    """The stored bytes either decode to exactly `raw` or are refused with a RepoError — nothing else."""
    try:
        got = codec.decode(method, stored, len(raw), hashlib.sha256(raw).digest())
    except RepoError as err:
        return str(err)
    assert bytes(got) == raw
    return None


# --- damaged zlib chunks ------------------------------------------------------------------------------------


def _with_dict():
    z = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=b"line of file the quick brown fox")
    return z.compress(RAW64) + z.flush()


def _gzip():
    z = zlib.compressobj(1, zlib.DEFLATED, 31)
    return z.compress(RAW64) + z.flush()


@pytest.mark.parametrize("name,stored", [
    ("truncated half", STREAM[:len(STREAM) // 2]),
    ("truncated trailer", STREAM[:-4]),
    ("truncated 1", STREAM[:-1]),
    ("header only", STREAM[:2]),
    ("seven bytes", STREAM[:7]),
    ("empty", b""),
    ("gzip header", _gzip()),
    ("preset dictionary", _with_dict()),
    ("inflates to more", zlib.compress(RAW64 + b"x")),
    ("inflates to fewer", zlib.compress(RAW64[:-1])),
    ("inflates to nothing", zlib.compress(b"")),
    ("a raw deflate stream", zlib.compress(RAW64)[2:-4]),
    ("zeros", bytes(64)),
])
def test_a_damaged_or_foreign_zlib_chunk_is_refused_with_a_repo_error(name, stored):
    assert decoded_or_refused(stored) is not None, name


def test_every_single_bit_flip_in_the_header_is_refused_or_read_right():
    for at in (0, 1):
        for bit in range(8):
            s = bytearray(STREAM)
            s[at] ^= 1 << bit
            decoded_or_refused(bytes(s))  # never an exception other than RepoError, never wrong bytes


@pytest.mark.parametrize("wbits", [9, 10, 12, 14, 15])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_a_zlib_stream_of_any_window_and_level_reads(wbits, level):
    z = zlib.compressobj(level, zlib.DEFLATED, wbits)
    assert decoded_or_refused(z.compress(RAW64) + z.flush()) is None


def test_a_stream_inflating_far_past_its_length_is_refused():
    bomb = zlib.compress(bytes(64 * MiB), 9)  # ~64 KiB stored that inflates to 64 MiB
    assert decoded_or_refused(bomb, raw=bytes(65536)) is not None


def test_a_chunk_inflating_past_its_length_is_refused_without_inflating_it_whole():
    """codec._inflate: 'into one buffer of its known length' — zlib.decompress's bufsize is only where its
    buffer starts; the zstd path passes max_output_size. A chunk is at most 64 KiB stored, which deflate
    can make inflate to 64 MiB; each of a restore's workers (one per core) may hold one."""
    import tracemalloc
    raw = bytes(65536)
    bomb = zlib.compress(bytes(64 * MiB), 9)
    assert len(bomb) <= 65536
    tracemalloc.start()
    try:
        with pytest.raises(RepoError):
            codec.decode(ZLIB, bomb, len(raw), hashlib.sha256(raw).digest())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB, peak


def _pack_with_one_zlib_chunk(tmp_path):
    disk = tmp_path / "disk.raw"
    with open(str(disk), "wb") as f:
        f.write(text(4 * MiB, seed=7))
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    loc = next(l for l in repo.chunk_map().values() if l.blob.method == ZLIB)
    return repo, snap, loc, disk


def _rewrite(tmp_path, loc, change):
    with open(os.path.join(str(tmp_path / "repo"), loc.pack), "r+b") as f:
        f.seek(loc.blob.offset)
        stored = bytearray(f.read(loc.blob.stored_len))
        change(stored)
        f.seek(loc.blob.offset)
        f.write(stored)
        return bytes(stored)


def _damage_adler(stored):
    stored[-1] ^= 0x01


def _damage_window(stored):  # CINFO 8 (a 64 KiB window: not a valid zlib header), FCHECK made right again
    stored[0] = 0x88
    stored[1] = next(b for b in range(256) if (0x88 * 256 + b) % 31 == 0 and not b & 0x20)


@pytest.mark.parametrize("damage", [_damage_adler, _damage_window], ids=["adler32", "window"])
def test_damage_in_a_zlib_chunks_trailer_or_header_is_found_by_verify(tmp_path, damage):
    """The repository's promise (docs/repository.md "Compression"): each zlib chunk is one standard zlib
    stream any hotvcb reads with zlib.decompress. A bit flipped in its adler32, or a header whose window
    size no zlib accepts, makes a chunk that hotvcb from before 2026-12-03 (zlib.decompress) cannot read;
    the raw inflate skips both, the SHA-256 of the content still matches, and the pack's name does not
    cover its blobs — so verify reports a sound repository and a GC copies the bad bytes on."""
    repo, snap, loc, _disk = _pack_with_one_zlib_chunk(tmp_path)
    stored = _rewrite(tmp_path, loc, damage)
    with pytest.raises(zlib.error):
        zlib.decompress(stored)
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 4 and loc.blob.digest.hex() in v.stdout, v.stdout + v.stderr


@pytest.mark.parametrize("where", ["start", "middle", "before trailer"])
def test_damage_inside_a_zlib_chunks_deflate_data_is_named_by_verify_and_restore(tmp_path, where):
    repo, snap, loc, _disk = _pack_with_one_zlib_chunk(tmp_path)

    def damage(stored):
        at = {"start": 2, "middle": len(stored) // 2, "before trailer": len(stored) - 6}[where]
        for at in range(at, len(stored) - 4):  # a byte whose change changes what it inflates to
            stored[at] ^= 0x55
            try:
                codec.decode(ZLIB, bytes(stored), loc.blob.raw_len, loc.blob.digest)
            except RepoError:
                return
            stored[at] ^= 0x55
        raise AssertionError("no byte there changes the content")

    _rewrite(tmp_path, loc, damage)
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 4 and loc.blob.digest.hex() in v.stdout and snap.id in v.stdout, v.stdout + v.stderr
    to = tmp_path / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    one_clear_line(r)
    assert r.returncode != 0 and loc.blob.digest.hex() in r.stderr, r.stdout + r.stderr
    assert not to.exists() and not os.path.exists(str(to) + ".hotvcb-restoring")


# --- RAW chunks, empty chunks, the probe's edges --------------------------------------------------------------


@pytest.mark.parametrize("stored", [RAW64[:-1], RAW64 + b"\0", b"", RAW64[1:] + b"l"])
def test_a_raw_chunk_of_the_wrong_length_or_bytes_is_refused(stored):
    assert decoded_or_refused(stored, method=RAW) is not None


KINDS = {
    "text": lambda n: text(n),
    "random": lambda n: noise(n),
    "zeros": lambda n: bytes(n),
    "random head, text after": lambda n: noise(min(n, codec.PROBE)) + text(max(0, n - codec.PROBE)),
    "text head, random after": lambda n: text(min(n, codec.PROBE)) + noise(max(0, n - codec.PROBE), 1),
}
SIZES = [0, 1, codec.PROBE - 1, codec.PROBE, codec.PROBE + 1, 2 * codec.PROBE - 1, 2 * codec.PROBE,
         2 * codec.PROBE + 1, 65535, 65536]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_chunks_at_the_probes_edges_round_trip_as_one_standard_stream(kind):
    for n in SIZES:
        raw = KINDS[kind](n)
        method, stored = codec.encode(memoryview(raw))
        stored = bytes(stored)
        assert method in (RAW, ZLIB), (n, method)
        assert len(stored) <= len(raw), (n, len(stored))
        if method == ZLIB:
            assert zlib.decompress(stored) == raw, n  # any hotvcb reads it
            assert len(stored) <= len(raw) - len(raw) // 32, n
        else:
            assert stored == raw, n
        assert bytes(codec.decode(method, stored, n, hashlib.sha256(raw).digest())) == raw, (kind, n)


def _probe_defeating_disk(path, head, size=8 * MiB):
    """Every 64 KiB chunk starts with 4 KiB of `head` ("random" or "text") and goes on with the other."""
    with open(str(path), "wb") as f:
        for i in range(size // 65536):
            if head == "random":
                f.write(noise(4096, i) + text(61440, i))
            else:
                f.write(text(4096, i) + noise(61440, i))
    return path


@pytest.mark.parametrize("head", ["random", "text"])
def test_data_that_defeats_the_probe_backs_up_verifies_and_restores_whole(tmp_path, head):
    disk = _probe_defeating_disk(tmp_path / "disk.raw", head)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    methods = {l.blob.method for l in repo.chunk_map().values()}
    assert methods <= {RAW, ZLIB}
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 0, v.stdout + v.stderr
    to = tmp_path / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(to / "disk.raw", disk)


def test_an_empty_disk_and_a_disk_of_one_byte_back_up_and_restore(tmp_path):
    empty, one = tmp_path / "empty.raw", tmp_path / "one.raw"
    empty.write_bytes(b"")
    one.write_bytes(b"x")
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", empty, one)
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 0, v.stdout + v.stderr
    to = tmp_path / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (to / "empty.raw").read_bytes() == b"" and (to / "one.raw").read_bytes() == b"x"


# --- restores stopped, filling their disk, run twice ------------------------------------------------------------


def big_zlib_backup(tmp_path, size=256 * MiB):
    disk = tmp_path / "big.raw"
    with open(str(disk), "wb") as f:
        for i in range(size // MiB):
            f.write(text(MiB, seed=i % 4))
    repo = new_repo(tmp_path / "repo", pack_size=64 * MiB)
    return repo, backup(repo, "web", disk), disk


def _restore_proc(tmp_path, snap, to):
    return subprocess.Popen([sys.executable, "-m", "hotvcb", "restore", "--repo", str(tmp_path / "repo"), snap.id,
                             "--to", str(to)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT))


def _until_written(p, target, at_least):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if os.stat(target).st_blocks * 512 >= at_least:
                return True
        except OSError:
            pass
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_restore_stopped_midway_then_run_again_gives_the_whole_disk(tmp_path, sig):
    repo, snap, disk = big_zlib_backup(tmp_path)
    to = tmp_path / "restored"
    work = str(to) + ".hotvcb-restoring"
    p = _restore_proc(tmp_path, snap, to)
    if not _until_written(p, os.path.join(work, "big.raw"), 16 * MiB):
        p.kill()
        out, err = p.communicate()
        pytest.skip("the restore ended before it could be stopped: %s %s" % (p.returncode, out + err))
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert p.returncode == 2, out + err
        assert "Traceback" not in out + err and "Exception in thread" not in err, out + err
        assert not to.exists() and not os.path.exists(work), os.listdir(str(tmp_path))
    assert not to.exists()  # nothing half written looks like the restored VM
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(to / "big.raw", disk)
    assert sorted(os.listdir(str(to))) == ["big.raw", "web.vmx"], os.listdir(str(to))
    assert sorted(os.listdir(str(tmp_path))) == ["big.raw", "repo", "restored"], os.listdir(str(tmp_path))


@needs_root
def test_a_zlib_restore_filling_its_disk_midway_fails_in_one_line_and_leaves_nothing(tmp_path, tmpfs):
    disk = make_disk(tmp_path / "disk.raw", size=24 * MiB) or tmp_path / "disk.raw"
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    small = tmpfs("small", "6m")  # the disk's data is ~12 MiB: it fills midway
    to = small / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    one_clear_line(r)
    line = [l for l in r.stderr.splitlines() if l.startswith("hotvcb: error:")][0]
    # now refused before anything is written (its room is checked first); a write failing midway in a
    # worker is tests/test_repo_codec.py's (the target filling under the restore)
    assert r.returncode != 0 and ("No space left on device" in line or "free there" in line), r.stdout + r.stderr
    assert "Exception in thread" not in r.stderr, r.stderr
    assert os.listdir(str(small)) == []


def test_a_restore_whose_writes_hit_the_file_size_limit_fails_in_one_line_and_leaves_nothing(tmp_path):
    """RLIMIT_FSIZE: every write past 4 MiB fails (EFBIG) — the target refusing writes, in a worker."""
    import resource
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=24 * MiB)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, "web", disk)
    to = tmp_path / "restored"

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4 * MiB, 4 * MiB))

    r = subprocess.run([sys.executable, "-m", "hotvcb", "restore", "--repo", str(tmp_path / "repo"), snap.id,
                        "--to", str(to)], capture_output=True, text=True, cwd=ROOT, timeout=80,
                       env=dict(os.environ, PYTHONPATH=ROOT), preexec_fn=limit)
    one_clear_line(r)
    assert r.returncode not in (0, 2) and "File too large" in r.stderr, r.stdout + r.stderr
    assert "Exception in thread" not in r.stderr, r.stderr
    assert not to.exists() and not os.path.exists(str(to) + ".hotvcb-restoring"), os.listdir(str(tmp_path))


@pytest.mark.parametrize("name", ["with space", "quote'\"d", "Umlaut-\u00e4\u00f6\u00fc"])
def test_a_restore_to_an_odd_path_restores_whole(tmp_path, name):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=6 * MiB)
    repo = new_repo(tmp_path / "repo")
    snap = backup(repo, name, disk)
    to = tmp_path / ("out " + name)
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(to / "disk.raw", disk)


def test_two_restores_at_once_into_one_name_give_one_whole_disk_and_one_refusal(tmp_path):
    repo, snap, disk = big_zlib_backup(tmp_path, size=96 * MiB)
    to = tmp_path / "restored"
    a, b = _restore_proc(tmp_path, snap, to), _restore_proc(tmp_path, snap, to)
    ra, rb = a.communicate(timeout=85), b.communicate(timeout=85)
    codes = sorted([a.returncode, b.returncode])
    assert codes[0] == 0 and codes[1] != 0, (codes, ra, rb)
    loser = ra if a.returncode else rb
    assert "Traceback" not in "".join(loser) and "hotvcb: error:" in loser[1], loser
    assert same(to / "big.raw", disk)
    assert sorted(os.listdir(str(tmp_path))) == sorted(["big.raw", "repo", "restored"]), os.listdir(str(tmp_path))


# --- restore --repo --datastore: the host's questions fail while the disk is written ------------------------


REPO = "/vmfs/volumes/backup/repo"


def _a_repo_backup_on_the_host(host, tmp_path):
    host.create_vm("web", "datastore1", [{"size": "8M"}])
    r = host_hotvcb(host, "backup", "-m", "web", "-g", write_conf(host), "--repo", REPO, "-w", tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr


def _datastore_leftovers(host):
    return sorted(e for e in os.listdir(host.real("/vmfs/volumes/datastore1")) if e != "web")


@needs_root
@pytest.mark.parametrize("verb", ["hostsvc/datastore/listsummary", "vmsvc/getallvms"])
def test_a_host_question_failing_during_a_repo_restore_fails_it_with_its_error_and_leaves_nothing(host, tmp_path,
                                                                                                  verb):
    _a_repo_backup_on_the_host(host, tmp_path)
    hostd_fails(host, verb)
    r = host_hotvcb(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1", "--name", "copy")
    out = r.stdout + r.stderr
    assert r.returncode not in (0, 2) and "Traceback" not in out and "Exception in thread" not in out, out
    errors = [line for line in out.splitlines() if "error:" in line]
    assert len(errors) == 1 and verb in errors[0] and "hostd is busy" in errors[0], out
    assert _datastore_leftovers(host) == [], out


@needs_root
def test_a_version_question_failing_during_a_repo_restore_is_no_crash_and_leaves_nothing_half_done(host, tmp_path):
    _a_repo_backup_on_the_host(host, tmp_path)
    wrap_tool(host, "vmware", 'echo "sh: /bin/vmware: not found" >&2; exit 127')
    r = host_hotvcb(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1", "--name", "copy")
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "Exception in thread" not in out, out
    if r.returncode == 0:  # an unknown release is only warned about (as for a backup)
        assert sorted(os.listdir(host.real("/vmfs/volumes/datastore1/copy")))
        assert [e for e in _datastore_leftovers(host) if e != "copy"] == [], out
    else:
        assert _datastore_leftovers(host) == [], out


def _a_repo_restore_hung_on_the_listing(host, tmp_path):
    """A repository restore to the datastore, running, with its datastore listing hung (the hung
    vim-cmds' pids appended to the returned file)."""
    _a_repo_backup_on_the_host(host, tmp_path)
    hung = tmp_path / "hung"
    wrap_tool(host, "vim-cmd", 'if [ "$1" = hostsvc/datastore/listsummary ]; then echo $$ >> %s; exec sleep 300; fi'
              % shlex.quote(str(hung)))
    from simhost import hotvcb_background
    p = hotvcb_background(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1",
                          "--name", "copy")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (hung.exists() and hung.stat().st_size) and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[0]
    return p, hung


@needs_root
def test_sigterm_while_the_datastore_listing_hangs_during_a_repo_restore_ends_it_cleanly(host, tmp_path):
    p, hung = _a_repo_restore_hung_on_the_listing(host, tmp_path)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    for pid in hung.read_text().split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    assert p.returncode == 2 and "Traceback" not in out and "Exception in thread" not in out, (p.returncode, out)
    assert _datastore_leftovers(host) == [], out


@needs_root
@pytest.mark.parametrize("tool,verb", [("vmware", "-v")])
def test_a_repo_restore_whose_staging_fails_is_not_held_by_a_hung_early_question(host, tmp_path, tool, verb):
    """The host's version is now asked beside the staging; where the staging fails (a damaged chunk)
    nothing needs its answer, so a hung hostd may not hold the failure's report (before, it was not
    asked: the failure came at once). The datastore listing is no longer an early question: the room
    check asks it, and the free space, before the staging (a datastore too small is refused untouched,
    test_outsider_s28restore), so a hung listing holds that restore as it holds every restore's checks."""
    from hotvcb.repo.repository import open_path
    from repotool import corrupt_one_chunk
    from simhost import hotvcb_background
    _a_repo_backup_on_the_host(host, tmp_path)
    repo = open_path(host.real(REPO))
    digest = corrupt_one_chunk(host.real(REPO), repo, repo.snapshots()[0])
    hung = tmp_path / "hung"
    wrap_tool(host, tool, 'if [ "$1" = %s ]; then echo $$ >> %s; exec sleep 300; fi'
              % (shlex.quote(verb), shlex.quote(str(hung))))
    p = hotvcb_background(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1",
                          "--name", "copy")
    held = ""
    try:
        out, _ = p.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        held = "HELD: still running after 45 s\n"
        p.kill()
        try:
            os.kill(_hotvcb_above(int(hung.read_text().split()[0])), signal.SIGKILL)
        except (OSError, ValueError, IndexError, AssertionError):
            pass
    finally:
        for pid in (hung.read_text().split() if hung.exists() else []):
            try:
                os.kill(int(pid), signal.SIGKILL)  # the pipe's last holder: the run's output ends
            except OSError:
                pass
    if held:
        out = held + p.communicate(timeout=30)[0]
    assert not out.startswith("HELD") and p.returncode not in (0, 2), (p.returncode, out)
    assert digest.hex() in out and "Traceback" not in out, out
    assert _datastore_leftovers(host) == [], out


def _hotvcb_above(pid):
    """The hotvcb process that (through its shell) started `pid`."""
    while pid > 1:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"-m\0hotvcb\0" in f.read():
                return pid
        with open("/proc/%d/status" % pid) as f:
            pid = int(next(l for l in f if l.startswith("PPid:")).split()[1])
    raise AssertionError("no hotvcb above it")


def _unwrap(host, tool, layer="usr_bin"):
    path = host.store.p("root", layer, "upper", tool)
    os.rename(path + ".real", path)


@needs_root
def test_a_repo_restore_killed_while_a_host_question_hangs_then_run_again_restores_and_leaves_nothing(host, tmp_path):
    p, hung = _a_repo_restore_hung_on_the_listing(host, tmp_path)
    os.kill(_hotvcb_above(int(hung.read_text().split()[0])), signal.SIGKILL)
    for pid in hung.read_text().split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    p.communicate(timeout=30)
    _unwrap(host, "vim-cmd")
    r = host_hotvcb(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1", "--name", "copy")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out
    c = host_hotvcb(host, "cleanup", "-g", write_conf(host))  # the killed run's scratch: cleanup's (restore.md)
    assert c.returncode == 0, c.stdout + c.stderr
    assert _datastore_leftovers(host) == ["copy"], out + c.stdout + c.stderr
    assert not [e for e in os.listdir(host.real("/vmfs/volumes/datastore1/copy")) if "hotvcb" in e], out


@needs_root
def test_two_repo_restores_at_once_into_one_name_register_one_vm_and_leave_nothing(host, tmp_path):
    from simhost import hotvcb_background, vim
    _a_repo_backup_on_the_host(host, tmp_path)
    procs = [hotvcb_background(host, "restore", "--repo", REPO, "--latest", "web", "--datastore", "datastore1",
                               "--name", "copy") for _ in range(2)]
    outs = [p.communicate(timeout=85)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] not in (0, 2), (codes, outs)
    assert not any("Traceback" in o or "Exception in thread" in o for o in outs), outs
    assert [l for l in vim(host, "vmsvc/getallvms").splitlines() if " copy " in l].__len__() == 1
    assert _datastore_leftovers(host) == ["copy"], outs


@pytest.mark.parametrize("chunk_size", [codec.PROBE, 2 * codec.PROBE, 4 * codec.PROBE])
def test_a_repository_of_chunks_near_the_probe_size_backs_up_verifies_and_restores(tmp_path, chunk_size):
    disk = tmp_path / "disk.raw"
    make_disk(disk, size=3 * MiB + 123, regions=3)
    with open(str(disk), "r+b") as f:  # chunks whose head is random and rest text, and the reverse
        f.seek(2 * MiB)
        for i in range(16):
            f.write(noise(codec.PROBE, i) + text(chunk_size - codec.PROBE, i) if i % 2 else
                    text(codec.PROBE, i) + noise(chunk_size - codec.PROBE, i))
    try:
        repo = new_repo(tmp_path / "repo", chunk_size=chunk_size)
    except RepoError as err:
        pytest.skip("this chunk size is refused: %s" % err)
    snap = backup(repo, "web", disk)
    for loc in repo.chunk_map().values():
        assert loc.blob.method in (RAW, ZLIB) and loc.blob.raw_len <= chunk_size
    v = cli("verify", "--repo", tmp_path / "repo")
    assert v.returncode == 0, v.stdout + v.stderr
    to = tmp_path / "restored"
    r = cli("restore", "--repo", tmp_path / "repo", snap.id, "--to", to)
    assert r.returncode == 0, r.stdout + r.stderr
    assert same(to / "disk.raw", disk)
