"""hotvcb.pyz: built reproducibly from the package alone, runs on Python 3.8, backs up a VM on a simulated host."""

import json
import os
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "scripts" / "build-pyz"
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
needs_py38 = pytest.mark.skipif(not os.path.exists(PY38), reason="no Python 3.8 at %s" % PY38)


def _build(out: Path) -> Path:
    subprocess.run([sys.executable, str(BUILD), "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("pyz") / "hotvcb.pyz")


def test_build_is_reproducible(pyz, tmp_path):
    again = _build(tmp_path / "again.pyz")
    assert again.read_bytes() == pyz.read_bytes()


def test_holds_the_package_only(pyz):
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(str(pyz)) as zf:
        names = zf.namelist()
        main = zf.read("__main__.py").decode()
    assert names == sorted(names) and names[0] == "__main__.py"
    assert all(n.startswith("hotvcb/") and n.endswith(".py") for n in names[1:])
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hotvcb").rglob("*.py"))
    assert names[1:] == sources
    assert "from hotvcb.cli import main" in main
    assert main == (ROOT / "hotvcb" / "__main__.py").read_text()  # one guarded entry for pyz and -m
    assert os.access(str(pyz), os.X_OK)


def _run(python, pyz, *args):
    return subprocess.run([python, str(pyz)] + list(args), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)


@needs_py38
def test_runs_on_python_38(pyz):
    from hotvcb import __version__

    done = _run(PY38, pyz, "--version")
    assert done.returncode == 0 and done.stdout.strip() == "hotvcb " + __version__
    done = _run(PY38, pyz, "backup", "--help")
    assert done.returncode == 0 and "-g FILE" in done.stdout
    done = _run(PY38, pyz, "schedule", "install", "--help")
    assert done.returncode == 0 and "--cron" in done.stdout


@needs_py38
def test_errors_are_one_line_from_the_pyz(pyz):
    done = _run(PY38, pyz, "backup", "-m", "x", "-g", "/nonexistent/hotvcb.conf")
    assert done.returncode == 1
    assert done.stderr.startswith("hotvcb: ") and "Traceback" not in done.stderr


@needs_py38
def test_schedule_from_the_pyz_runs_the_pyz(pyz, tmp_path):
    """A job installed by the pyz starts that same pyz (systemd flavour: plain files, no host needed)."""
    (tmp_path / "qmp").mkdir()
    (tmp_path / "bk").mkdir()
    (tmp_path / "hotvcb.conf").write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "bk"))
    job = ["--qemu", str(tmp_path / "qmp"), "-a", "-g", str(tmp_path / "hotvcb.conf")]
    done = subprocess.run([PY38, str(pyz), "schedule", "install", "--platform", "linux", "--systemd",
                           "--unit-dir", str(tmp_path), "--cron", "0 17 * * 4", "--"] + job,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env={"PATH": str(tmp_path)})  # no systemctl: the units are written, a warning said so
    assert done.returncode == 0, done.stderr
    service = (tmp_path / "hotvcb-hotvcb.service").read_text()
    assert "ExecStart=%s %s --qemu %s backup -a -g %s\n" % (PY38, pyz, tmp_path / "qmp", tmp_path / "hotvcb.conf") \
        in service


OLD_PYTHONS = {v: "/root/.pyenv/versions/%s/bin/python%s" % (full, v)
               for v, full in (("2.7", "2.7.18"), ("3.6", "3.6.15"), ("3.7", "3.7.16"))}


@pytest.mark.parametrize("version", sorted(OLD_PYTHONS))
def test_an_old_python_is_told_what_is_needed_and_pointed_to_ssh_mode(pyz, version):
    """ESXi 6.x ships 3.5, older hosts 2.7: one line and exit 1, never a traceback (pyz and -m)."""
    python = OLD_PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("no Python %s at %s" % (version, python))
    for argv, env in (([python, str(pyz), "backup", "-a"], {"PATH": "/usr/bin:/bin"}),
                      ([python, "-m", "hotvcb", "-a"], {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})):
        done = subprocess.run(argv, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=env, timeout=60)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("hotvcb: error: this Python is %s; hotvcb needs Python 3.8" % version)
        assert "hotvcb --host root@HOST" in done.stderr and len(done.stderr.splitlines()) == 1
        assert done.stdout == ""
    if version == "2.7":
        _entry_files_parse_on_python_27_and_35()


def _entry_files_parse_on_python_27_and_35():
    """What runs first (hotvcb/__init__.py, then __main__.py) must stay free of newer syntax.

    No 3.5 interpreter here: vermin checks the 3.5 grammar (and 2.7 once more)."""
    files = [str(ROOT / "hotvcb" / "__init__.py"), str(ROOT / "hotvcb" / "__main__.py")]
    py27 = OLD_PYTHONS["2.7"]
    if os.path.exists(py27):
        for f in files:
            done = subprocess.run([py27, "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')", f],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
            assert done.returncode == 0, done.stdout
    vermin = pytest.importorskip("vermin.main")
    done = subprocess.run([sys.executable, "-c", "import sys; from vermin.main import main; sys.exit(main())",
                           "-q", "--no-tips", "--violations", "-t=2.7-", "-t=3.5-"] + files,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert vermin and done.returncode == 0, done.stdout


# -- inside a simulated ESXi host --------------------------------------------------------------
def _esxisim(*args, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "esxisim"] + list(args), cwd=str(ROOT), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    if check:
        assert done.returncode == 0, "%s\n%s%s" % (args, done.stdout, done.stderr)
    return done


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")
@pytest.mark.skipif(not (ROOT / "esxisim" / "host.py").exists(), reason="esxisim not present")
def test_backs_up_a_running_vm_with_the_hosts_python(pyz, tmp_path):
    host = str(tmp_path / "host")
    _esxisim("create", host, "--version", "8.0.2")
    try:
        _esxisim("datastore", host, "ds1")
        _esxisim("vm", host, "web 01", "--datastore", "ds1", "--power", "on", "--writer")
        script = "\n".join([
            "set -e",
            "cp %s /vmfs/volumes/ds1/hotvcb.pyz" % shlex.quote(str(pyz)),
            "printf 'VM_BACKUP_VOLUME=/vmfs/volumes/ds1/backups\\nDISK_BACKUP_FORMAT=thin\\n' > /vmfs/volumes/ds1/hotvcb.conf",
            "/bin/python --version",
            "cd /",
            "/bin/python /vmfs/volumes/ds1/hotvcb.pyz backup -m 'web 01' -g /vmfs/volumes/ds1/hotvcb.conf",
        ])
        done = _esxisim("shell", host, "--", "sh", "-c", script, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Python 3.8" in done.stdout + done.stderr
        assert "Final status: All VMs backed up OK!" in done.stdout + done.stderr
        listing = _esxisim("shell", host, "--", "sh", "-c",
                           "cd '/vmfs/volumes/ds1/backups/web 01' && ls -d */ && ls */ && cat */hotvcb.json").stdout
        folders = [ln for ln in listing.splitlines() if ln.endswith("/")]
        assert len(folders) == 1 and folders[0].startswith("web 01-")
        assert "STATUS.ok" in listing and "web 01.vmx" in listing and "web 01-flat.vmdk" in listing
        manifest = json.loads(listing[listing.index("{"):])
        assert manifest["result"] == "ok"
        assert "web 01-flat.vmdk" in manifest["files"] and manifest["files"]["web 01-flat.vmdk"]["sha256_of_blocks"]
        state = _esxisim("state", host).stdout
        assert "hotvcb-snapshot" not in state, "our snapshot was removed"
    finally:
        _esxisim("destroy", host, check=False)


@pytest.mark.parametrize("version", sorted(OLD_PYTHONS))
def test_an_old_python_on_a_host_tells_ssh_mode_to_go_file_by_file(version):
    """onhost_boot.py (hostrun.py starts it with the host's python) parses on 2.7 and answers `old`."""
    python = OLD_PYTHONS[version]
    if not os.path.exists(python):
        pytest.skip("no Python %s at %s" % (version, python))
    source = (ROOT / "hotvcb" / "onhost_boot.py").read_text()
    done = subprocess.run([python, "-c", source, "n0nce", "0" * 64, "/nonexistent"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "HOTVCB-ONHOST n0nce old %s\n" % version, "")


def test_the_host_runs_a_build_unpacked_and_compiled_once_and_forgets_what_killed_runs_left(tmp_path):
    """Python never caches bytecode for modules imported from a zip: each on-host run from the pyz compiled
    every module again. The host end unpacks a build once beside its pyz, compiled, and runs that; what a
    killed unpacking or removal left (named by its dead pid) goes at the next run, a live one's stays."""
    from hotvcb import onhost_boot, pyzpack

    data, _ = pyzpack.build(str(ROOT))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    pyz = cache / "hotvcb-abc.pyz"
    pyz.write_bytes(data)
    folder = Path(onhost_boot.unpacked(str(pyz)))
    assert folder == cache / "hotvcb-abc" and (folder / ".built").is_file()
    done = subprocess.run([sys.executable, str(folder), "--version"], stdout=subprocess.PIPE, timeout=60,
                          universal_newlines=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.startswith("hotvcb "), done
    assert list((folder / "hotvcb" / "__pycache__").glob("cli.*.pyc")), "the run left no bytecode for the next"
    stamp = (folder / "hotvcb" / "cli.py").stat().st_mtime_ns
    assert onhost_boot.unpacked(str(pyz)) == str(folder)  # the second run: as it is, not unpacked again
    assert (folder / "hotvcb" / "cli.py").stat().st_mtime_ns == stamp
    (cache / "hotvcb-bad.pyz").write_bytes(b"not a zip")
    assert onhost_boot.unpacked(str(cache / "hotvcb-bad.pyz")) == str(cache / "hotvcb-bad.pyz")
    sleeper = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        for name in ("hotvcb-x.%d.tmp" % dead.pid, "hotvcb-y.%d.old" % dead.pid, "hotvcb-z.%d.tmp" % sleeper.pid):
            (cache / name).mkdir()
            (cache / name / "f").write_text("x")
        (cache / ("hotvcb-abc.pyz.%d.tmp" % dead.pid)).write_bytes(b"part")
        old = time.time() - onhost_boot.KEEP_OLD_BUILDS - 60
        for name in ("hotvcb-old", "hotvcb-old.pyz"):
            (cache / name).mkdir() if "." not in name else (cache / name).write_bytes(b"x")
            os.utime(str(cache / name), (old, old))
        os.utime(str(folder), (old, old))  # the current build is kept however old
        onhost_boot.forget_old_builds(str(cache), (str(pyz), str(folder)))
        left = sorted(p.name for p in cache.iterdir())
        assert left == sorted(["hotvcb-abc", "hotvcb-abc.pyz", "hotvcb-bad.pyz", "hotvcb-z.%d.tmp" % sleeper.pid]), left
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_hosts_end_is_ascii_for_old_pythons_in_the_c_locale():
    """SSH mode passes onhost_boot.py as `python -c SOURCE`; Python 3.5/3.6 in the C locale (an ESXi 6.x
    session) cannot decode a non-ASCII argument and refuse it whole, before it could answer `old`."""
    assert (ROOT / "hotvcb" / "onhost_boot.py").read_bytes().isascii()


def test_the_hosts_end_imports_nothing_from_the_ssh_sessions_working_folder(tmp_path):
    """SSH mode starts onhost_boot.py (and treescan.py) as `python -c SOURCE` in the session's working folder
    (root's home: `/` on ESXi), which `-c` puts first on the import path; `-I` would not, but 2.7 and 3.5 do
    not know it and must still answer `old`. A tempfile.py lying there ran as root in the module's place."""
    from hotvcb import sshscripts

    home = tmp_path / "home"
    home.mkdir()
    (home / "tempfile.py").write_text("import sys\nsys.stderr.write('PLANTED\\n')\nsys.exit(42)\n")
    cache = tmp_path / "cache"
    source = (ROOT / "hotvcb" / "onhost_boot.py").read_text()
    done = subprocess.run(sshscripts.python_argv(source, ["n0nce", "0" * 64, str(cache)]), cwd=str(home),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                          timeout=60)
    assert "PLANTED" not in done.stderr and done.stdout.startswith("HOTVCB-ONHOST n0nce need "), done


def test_a_pyz_rewritten_in_place_after_the_start_changes_nothing_of_the_run(pyz, tmp_path):
    """`scp` of a new build over the pyz rewrites it in place while a run may use it; zipimport read a module
    imported late (the mail code at the run's end) at the old build's offsets from the new file. A run
    imports from the copy it read at its start (pyzcopy), pkgutil.get_data and the pyz SSH mode ships too."""
    live = tmp_path / "hotvcb.pyz"
    live.write_bytes(pyz.read_bytes())
    other = _build(tmp_path / "other.pyz")  # the same modules at other offsets
    script = ("import pkgutil, sys; sys.path.insert(0, sys.argv[1]); from hotvcb import pyzcopy; pyzcopy.hold()\n"
              "started = open(sys.argv[1], 'rb').read()\n"
              "with open(sys.argv[1], 'r+b') as f:\n    f.write(b'#!/bin/python -X\\n' + open(sys.argv[2], 'rb').read())\n"
              "from hotvcb import notify, pyzpack\n"
              "assert pkgutil.get_data('hotvcb', 'onhost_boot.py').startswith(b'\"\"\"')\n"
              "assert pyzpack.this_package() == started\n"
              "print('imported', notify.__name__)\n")
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(live), str(other)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "imported hotvcb.notify" in done.stdout, done
