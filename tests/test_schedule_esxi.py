"""End to end inside an esxisim host: install → show → reboot → line back → remove → gone.

hotvcb runs as it would on the host: `/bin/python /vmfs/volumes/ds1/hotvcb.pyz schedule …`.
A "reboot" is what ESXi does to these files: the crontab comes back as the image's default,
local.sh comes back as auto-backup.sh saved it to the bootbank, and then local.sh runs.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from simhost import wait_for

from esxisim import enter  # noqa: E402  (simhost puts the repository on the path)

ROOT = Path(__file__).resolve().parents[1]
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"
CRONTAB = "/var/spool/cron/crontabs/root"
LOCAL_SH = "/etc/rc.local.d/local.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)"),
    pytest.mark.skipif(not (ROOT / "esxisim" / "host.py").exists(), reason="esxisim not present"),
]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    out = tmp_path_factory.mktemp("pyz") / "hotvcb.pyz"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build-pyz"), "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def _sh(host_dir, script, check=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(enter.argv(str(host_dir), ["sh", "-c", script]),  # no Python start in between
                          cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    if check:
        assert done.returncode == 0, "%s\n%s%s" % (script, done.stdout, done.stderr)
    return done


def _esxisim(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "esxisim"] + list(args), cwd=str(ROOT), env=env, check=True,
                          stdout=subprocess.PIPE, universal_newlines=True).stdout


class Esxi:
    """A simulated host with hotvcb.pyz on datastore ds1."""

    def __init__(self, path: Path, version: str, pyz: Path):
        self.path, self.version = path, version
        _esxisim("create", str(path), "--version", version)
        _esxisim("datastore", str(path), "ds1")
        _esxisim("vm", str(path), "web 01", "--datastore", "ds1")
        self.sh("cp %s /vmfs/volumes/ds1/hotvcb.pyz" % shlex.quote(str(pyz)))
        # install checks the job as the run would: the list, the config and the VM must be there
        self.sh("printf 'web 01\\n' > '/vmfs/volumes/ds1/vms to back up' && "
                "printf 'VM_BACKUP_VOLUME=/vmfs/volumes/ds1/backups\\n' > /vmfs/volumes/ds1/hotvcb.conf")
        self.crond_started(0)

    def sh(self, script, check=True):
        return _sh(self.path, script, check)

    def hotvcb(self, *args, check=True):
        return self.sh("cd / && /bin/python /vmfs/volumes/ds1/hotvcb.pyz " + " ".join(shlex.quote(a) for a in args),
                       check)

    def read(self, path):
        return self.sh("cat %s" % path).stdout

    def crond_log(self):
        log = self.path / "state" / "crond.log"
        return [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []

    def crond_started(self, since, line=None):
        """The crond log once a crond has logged its start after record `since` (having read `line` in the
        crontab, if given). A crond is started (host creation, `busybox crond`) with a wait for its pid file
        only, and it logs its start after writing that file: under load, after the command that started it
        has returned."""
        wait_for(lambda: any(r["event"] == "start" and (line is None or line in r["crontab"])
                             for r in self.crond_log()[since:]),
                 what="a crond start after record %d%s" % (since, " reading " + line if line else ""))
        return self.crond_log()

    def reboot(self):
        """Crontab back to the image default, local.sh from the bootbank, then local.sh runs."""
        sys.path.insert(0, str(ROOT))
        from esxisim import versions

        saved = self.path / "state" / "bootbank" / "local.sh"
        assert saved.exists(), "auto-backup.sh was never run: the edit would be lost at reboot"
        self.sh("cat > %s <<'EOF'\n%sEOF" % (CRONTAB, versions.crontab(self.version)))
        # `sh local.sh`: ESXi's own sh takes the "++group=..." of the 7.x+ first line, Linux sh would not
        self.sh("cp %s %s && sh %s" % (shlex.quote(str(saved)), LOCAL_SH, LOCAL_SH))


@pytest.fixture
def esxi(request, tmp_path, pyz):
    """ESXi 8.0.2, or the version a test is parametrized with (`version`)."""
    host = Esxi(tmp_path / "host", getattr(request, "param", "8.0.2"), pyz)
    yield host
    _esxisim("destroy", str(host.path))


ARGS = ["--cron", "0 17 * * 4", "--", "-f", "/vmfs/volumes/ds1/vms to back up", "-g", "/vmfs/volumes/ds1/hotvcb.conf"]


def _ours(crontab):
    return [ln for ln in crontab.splitlines() if ln.endswith("# hotvcb:hotvcb")]


@pytest.mark.parametrize("esxi", ["7.0.3", "8.0.2"], indirect=True)  # 6.x: Python 3.5, no pyz runs there
def test_round_trip_survives_reboot_and_remove_undoes_it(esxi):
    default_crontab = esxi.read(CRONTAB)
    default_local = esxi.read(LOCAL_SH)
    starts = len([r for r in esxi.crond_log() if r["event"] == "start"])

    before = len(esxi.crond_log())
    out = esxi.hotvcb("schedule", "install", *ARGS).stdout
    assert "installed job hotvcb" in out and "persisted in /etc/rc.local.d/local.sh" in out
    lines = _ours(esxi.read(CRONTAB))
    assert lines == ["0 17 * * 4 /bin/python /vmfs/volumes/ds1/hotvcb.pyz backup -f '/vmfs/volumes/ds1/vms to back up'"
                     " -g /vmfs/volumes/ds1/hotvcb.conf >> /var/log/hotvcb-hotvcb.log 2>&1 # hotvcb:hotvcb"]
    log = esxi.crond_started(before, lines[0])  # "the new crond saw our line"
    assert [r["event"] for r in log[before:]] == ["stop", "start"], "crond was restarted"

    shown = esxi.hotvcb("schedule", "show").stdout
    assert lines[0] in shown
    assert "boot block in /etc/rc.local.d/local.sh: present" in shown
    assert "survives a reboot: yes" in shown and "crond: running" in shown

    seen = len(esxi.crond_log())
    esxi.reboot()
    assert _ours(esxi.read(CRONTAB)) == lines, "local.sh put the line back"
    # local.sh's kill is asynchronous: the old crond may log its stop after the new one's start
    esxi.crond_started(seen, lines[0])
    seen = len(esxi.crond_log())
    esxi.sh("sh " + LOCAL_SH)  # local.sh run again: still one line
    assert _ours(esxi.read(CRONTAB)) == lines
    esxi.crond_started(seen)  # its crond's pid file written, for remove's restart to stop it

    out = esxi.hotvcb("schedule", "remove").stdout
    assert out.strip() == "removed job(s): hotvcb"
    assert esxi.read(CRONTAB) == default_crontab
    assert esxi.read(LOCAL_SH) == default_local
    assert "hotvcb" not in (esxi.path / "state" / "bootbank" / "local.sh").read_text(), "removal was persisted"
    assert "no hotvcb jobs installed" in esxi.hotvcb("schedule", "show").stdout
    esxi.reboot()
    assert _ours(esxi.read(CRONTAB)) == []
    assert len([r for r in esxi.crond_log() if r["event"] == "start"]) > starts  # each awaited where it began


def test_install_twice_gives_one_line_and_one_block(esxi):
    esxi.hotvcb("schedule", "install", *ARGS)
    esxi.hotvcb("schedule", "install", "--log", "/tmp/other.log", *ARGS)
    lines = _ours(esxi.read(CRONTAB))
    assert len(lines) == 1 and lines[0].endswith(">> /tmp/other.log 2>&1 # hotvcb:hotvcb")
    local = esxi.read(LOCAL_SH)
    assert local.count("# hotvcb:hotvcb begin") == 1 and "/tmp/other.log" in local
    assert local.rstrip().endswith("exit 0")


def test_two_jobs_and_remove_all(esxi):
    esxi.hotvcb("schedule", "install", "--job", "weekly", *ARGS)
    esxi.hotvcb("schedule", "install", "--job", "daily", "--cron", "@daily", "--", "-a", "-g", "/vmfs/volumes/ds1/hotvcb.conf")
    crontab = esxi.read(CRONTAB)
    assert len([ln for ln in crontab.splitlines() if "# hotvcb:" in ln]) == 2
    assert "\n0 0 * * * /bin/python" in crontab  # busybox crond gets five fields, not @daily
    esxi.hotvcb("schedule", "remove", "--job", "daily")
    assert "# hotvcb:daily" not in esxi.read(CRONTAB) and "# hotvcb:weekly" in esxi.read(CRONTAB)
    assert esxi.hotvcb("schedule", "remove", "--all").stdout.strip() == "removed job(s): weekly"
    assert "hotvcb" not in esxi.read(CRONTAB) + esxi.read(LOCAL_SH)


def test_bad_arguments_change_nothing(esxi):
    before = esxi.read(CRONTAB) + esxi.read(LOCAL_SH)
    done = esxi.hotvcb("schedule", "install", "--cron", "0 17 * *", "--", "-a", check=False)
    assert done.returncode == 1 and "needs 5" in done.stderr
    done = esxi.hotvcb("schedule", "install", "--cron", "0 17 * * 4", "--", "-g", "/x", check=False)
    assert done.returncode == 1 and "which VMs" in done.stderr
    done = esxi.hotvcb("schedule", "install", "--systemd", *ARGS, check=False)
    assert done.returncode == 1 and "--systemd is for Linux" in done.stderr
    assert esxi.read(CRONTAB) + esxi.read(LOCAL_SH) == before


def test_install_checks_the_job_first_and_keeps_paths_as_written(esxi):
    """Issue 10 item 2: a misspelt list, config or VM name is refused before anything is written; relative
    paths from a datastore folder are installed under the datastore's name, not its UUID."""
    before = esxi.read(CRONTAB) + esxi.read(LOCAL_SH)
    pyz = "/bin/python /vmfs/volumes/ds1/hotvcb.pyz schedule install --cron '0 17 * * 4' -- "
    for job, words in (("-f 'vms to backup' -g hotvcb.conf", "cannot read VM list file vms to backup: "),
                       ("-f 'vms to back up' -g hotvcb.cnf", "hotvcb.cnf"),
                       ("-m 'Web 01' -g hotvcb.conf", "no VM named 'Web 01' on this host (did you mean 'web 01'?)")):
        done = esxi.sh("cd /vmfs/volumes/ds1 && " + pyz + job, check=False)
        assert done.returncode == 1 and words in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1 and "/vmfs/volumes/ds1/" not in done.stderr
    assert esxi.read(CRONTAB) + esxi.read(LOCAL_SH) == before
    uuid_dir = esxi.sh("cd /vmfs/volumes/ds1 && pwd -P").stdout.strip()
    assert uuid_dir != "/vmfs/volumes/ds1"  # the datastore name is a symlink to its UUID folder
    esxi.sh("cd /vmfs/volumes/ds1 && " + pyz + "-f 'vms to back up' -g hotvcb.conf")
    (line,) = _ours(esxi.read(CRONTAB))
    assert " backup -f '/vmfs/volumes/ds1/vms to back up' -g /vmfs/volumes/ds1/hotvcb.conf >> " in line
