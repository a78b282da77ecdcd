"""An outsider's attacks on hotvcb run ON the ESXi host itself, as the docs say to run it: the pyz
copied to a datastore and started by the host's own Python 3.8, with nothing else (`python -I -S`, no
site-packages), from cron's bare environment (no LANG, C locale), from a folder whose name holds a
space, from another working directory, with the host's small /tmp ramdisk full or read-only (also
under SSH mode's run on the host), and with the pyz upgraded while a run uses it."""

import os
import shutil
import subprocess
import sys

import pytest

from simhost import REPO, copying, needs_root, on_host, sealed, snapshot_names, wait_for, write_conf

pytestmark = [needs_root]

BARE = ["env", "-i", "PATH=/bin:/sbin:/usr/bin"]  # what cron gives a job on ESXi: no LANG, no PYTHON*
FOLDER = "/vmfs/volumes/datastore1/hot vcb"  # the admin's copy, in a folder whose name holds a space
PYZ = FOLDER + "/hotvcb.pyz"


def _build(out, interpreter=None):
    cmd = [sys.executable, os.path.join(REPO, "scripts", "build-pyz"), "-o", str(out)]
    if interpreter:
        cmd += ["--python", interpreter]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return str(out)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """(this hotvcb's pyz, the same sources built with another interpreter line: a second build whose
    zip members lie at other offsets, as the next release's do)."""
    folder = tmp_path_factory.mktemp("pyz")
    return _build(folder / "hotvcb.pyz"), _build(folder / "other.pyz", "/bin/python")


def _install(host, pyz):
    dest = host.real(PYZ)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copyfile(pyz, dest)  # in place, as scp writes it


def _argv(host, *args, cwd="/"):
    """The host's python on the datastore's pyz, isolated (-I -S: the standard library only), in
    cron's bare environment, started from `cwd` on the host."""
    script = 'cd "$1" && shift && exec "$@"'
    return on_host(host, "sh", "-c", script, "sh", cwd, *BARE, "/bin/python", "-I", "-S", PYZ, *args)


def _run(host, *args, cwd="/", timeout=180):
    r = subprocess.run(_argv(host, *args, cwd=cwd), capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    r.out = r.stdout + r.stderr
    return r


def _vmid(host, name):
    (vmid,) = [k for k in host.state()["vms"] if host.display_name(k) == name]
    return vmid


def test_every_command_runs_from_the_pyz_on_the_hosts_bare_python(host, builds, tmp_path):
    """Control: backup, list, verify, status, cleanup, restore and the repository's backup, list, verify
    and prune, all from the datastore's pyz with `python -I -S` in cron's bare environment (C locale),
    a VM named with an umlaut, the pyz in a folder with a space and the run started from /var."""
    _install(host, builds[0])
    host.create_vm("Prüf VM", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    repo = write_conf(host, "repo.conf", VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo")
    for args in (["backup", "-m", "Prüf VM", "-g", conf], ["list", "-g", conf], ["verify", "--all", "-g", conf],
                 ["status", "-g", conf], ["cleanup", "-g", conf], ["backup", "-m", "Prüf VM", "-g", repo],
                 ["list", "-g", repo], ["verify", "Prüf VM", "-g", repo], ["prune", "--keep-last", "1", "-g", repo],
                 ["restore", "--latest", "Prüf VM", "-g", conf, "--datastore", "datastore1", "--name", "Prüf 2"]):
        r = _run(host, *args, cwd="/var")
        assert r.returncode == 0 and "Traceback" not in r.out and "internal error" not in r.out, (args, r.out)
    assert len(sealed(host, "Prüf VM")) == 1
    assert not [n for n in snapshot_names(host, _vmid(host, "Prüf VM")) if n.startswith("hotvcb-")]


def test_a_pyz_upgraded_in_place_during_a_run_still_ends_the_run_and_sends_its_report(host, builds):
    """The admin upgrades hotvcb the way the docs install it, `scp dist/hotvcb.pyz
    root@esxi01:/vmfs/volumes/datastore1/`, while last night's run (EMAIL_LOG=1) is still copying a
    disk. scp rewrites the file in place. Every VM was backed up and the log said `All VMs backed up
    OK!`, but then the run, which imports its mail code from the pyz only once it mails, read the new
    file at the old build's offsets and died with `hotvcb: internal error: ZipImportError: bad local
    file header`, exit 1, and the report mail was never even tried. The run had all it needed when it
    started (SSH mode runs an unpacked copy for this reason); it should end as it would have: the
    mail tried (here: refused, `e-mail report not sent`), no internal error."""
    _install(host, builds[0])
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    conf = write_conf(host, VM_BACKUP_VOLUME="/vmfs/volumes/backup/hotvcb", EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1",
                      EMAIL_SERVER_PORT=1, EMAIL_TO="admin@example.com", EMAIL_FROM="esxi@example.com")
    host.set_fault("clone.delay", 3)
    run = subprocess.Popen(_argv(host, "backup", "-m", "web", "-g", conf), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    try:
        wait_for(lambda: copying(host, "web"), timeout=60, what="the disk copy")
        _install(host, builds[1])  # the upgrade lands while the run copies
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert "All VMs backed up OK" in out, out
    assert len(sealed(host, "web")) == 1
    assert "internal error" not in out and "ZipImportError" not in out, out
    assert "e-mail report not sent" in out, out


def _schedule(host, *args, cwd="/"):
    """`schedule` from the pyz as an admin types it in the host's shell (PWD kept: the shell's own)."""
    script = 'cd "$1" && shift && exec "$@"'
    return subprocess.run(on_host(host, "sh", "-c", script, "sh", cwd, "/bin/python", *args), capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)


def test_schedule_show_of_one_job_shows_that_job(host, builds):
    """The host runs two jobs, `nightly` and `weekly`. The admin checks the weekly one with `hotvcb
    schedule show --job weekly` (show's help offers `--job NAME  job name`) and gets both; worse,
    `show --job weekyl` (a typo) answers exit 0 with both jobs listed, as if all were well. It should
    show the job asked for, and say that a job not installed is not (as `remove` does)."""
    _install(host, builds[0])
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    for job, cron in (("nightly", "0 2 * * *"), ("weekly", "0 3 * * 6")):
        r = _schedule(host, PYZ, "schedule", "install", "--cron", cron, "--job", job, "--", "-m", "web", "-g", conf)
        assert r.returncode == 0, r.stdout + r.stderr
    one = _schedule(host, PYZ, "schedule", "show", "--job", "weekly")
    assert one.returncode == 0, one.stdout + one.stderr
    assert "job weekly" in one.stdout and "job nightly" not in one.stdout, one.stdout
    typo = _schedule(host, PYZ, "schedule", "show", "--job", "weekyl")
    assert typo.returncode != 0 or "not installed" in typo.stdout + typo.stderr, typo.stdout + typo.stderr
    assert "job nightly" not in typo.stdout, typo.stdout


def test_a_job_run_from_a_pyz_on_the_ramdisk_is_not_said_to_survive_a_reboot(host, builds):
    """The admin scp'd hotvcb.pyz to the host's /tmp (the usual scratch place) and ran `cd /tmp &&
    python hotvcb.pyz schedule install --cron ... -- -m web -g /vmfs/volumes/datastore1/hotvcb.conf`.
    The job line names `/bin/python /tmp/hotvcb.pyz`; ESXi's /tmp is a ramdisk emptied by every reboot,
    so after the next patch reboot local.sh faithfully puts the line back and every night's backup
    fails with `can't open file '/tmp/hotvcb.pyz'` into a log nobody reads. install said nothing and
    `show` says `survives a reboot: yes`. install checks everything else a job needs so that `a typo
    fails at install, not at 17:00 on Thursday`: it should warn (or refuse) that the program itself
    lies on the ramdisk, and show should not promise the job survives a reboot."""
    shutil.copyfile(write_conf(host), host.real("/vmfs/volumes/datastore1/hotvcb.conf"))
    conf = "/vmfs/volumes/datastore1/hotvcb.conf"  # all else the job needs lies on a datastore
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    scratch = "/tmp/hotvcb-s33-%d" % os.getpid()  # the host's /tmp (the simulator shares this machine's)
    os.makedirs(scratch)
    try:
        shutil.copyfile(builds[0], os.path.join(scratch, "hotvcb.pyz"))
        r = _schedule(host, "hotvcb.pyz", "schedule", "install", "--cron", "0 2 * * *", "--job", "ram", "--",
                      "-m", "web", "-g", conf, cwd=scratch)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "%s/hotvcb.pyz" % scratch in r.stdout, r.stdout  # the job runs the pyz in /tmp
        show = _schedule(host, "hotvcb.pyz", "schedule", "show", cwd=scratch)
        warned = [l for l in (r.stdout + r.stderr).splitlines()
                  if "warning" in l.lower() and scratch in l]  # naming the pyz's place
        said = show.stdout[show.stdout.index("job ram"):]
        assert warned or "survives a reboot: yes" not in said.split("\njob ")[0], r.stdout + r.stderr + show.stdout
    finally:
        _schedule(host, os.path.join(scratch, "hotvcb.pyz"), "schedule", "remove", "--job", "ram")
        shutil.rmtree(scratch, ignore_errors=True)



def test_a_job_installed_from_a_source_copy_on_a_datastore_names_it_by_the_datastores_name(host):
    """The admin keeps hotvcb as a source copy on the datastore (`/vmfs/volumes/datastore1/src/hotvcb`,
    run as `cd /vmfs/volumes/datastore1/src && python -m hotvcb ...`; install works from one, the
    line it writes runs `/usr/bin/env PYTHONPATH=<source> /bin/python -m hotvcb`). `schedule install`
    writes `-g /vmfs/volumes/datastore1/hotvcb.conf` as typed (docs: paths are made absolute against
    the shell's $PWD, `not the UUID path`, so that `a datastore made anew under its name keeps the whole
    line working`), yet in the same line `PYTHONPATH=/vmfs/volumes/<uuid>/src`: after the datastore is
    re-created (restored from a replica, reformatted) under the same name, the job finds its config but
    not hotvcb itself and never runs again. The source path should be the name path too."""
    write_conf(host)
    shutil.copyfile(os.path.join(host.root, "hotvcb.conf"), host.real("/vmfs/volumes/datastore1/hotvcb.conf"))
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    shutil.copytree(os.path.join(REPO, "hotvcb"), host.real("/vmfs/volumes/datastore1/src/hotvcb"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = _schedule(host, "-m", "hotvcb", "schedule", "install", "--cron", "0 2 * * *", "--job", "src", "--",
                  "-m", "web", "-g", "../hotvcb.conf", cwd="/vmfs/volumes/datastore1/src")
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "-g /vmfs/volumes/datastore1/hotvcb.conf" in r.stdout, r.stdout  # the name, as documented
        assert "PYTHONPATH=/vmfs/volumes/datastore1/src " in r.stdout, r.stdout
    finally:
        _schedule(host, "-m", "hotvcb", "schedule", "remove", "--job", "src", cwd="/vmfs/volumes/datastore1/src")


# ---- SSH mode: the host's end of the run, with the host's /tmp filling up during the run -------------------------
from sshd import needs_sshd  # noqa: E402
from sshsite import site  # noqa: E402,F401  (the fixture)


@pytest.fixture
def small_tmp(tmp_path, request):
    """A tmpfs of request.param bytes standing for the host's /tmp ramdisk, mounted before the site
    fixture starts sshd in the host's mount namespace, so the host sees it."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % request.param, "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder):
    """Unbuffered: a buffered file's close would retry the bytes the full disk refused, and raise there
    whenever the room left was not a whole number of writes (it hangs on the pyz's size)."""
    with open(os.path.join(str(folder), "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass


@needs_sshd
@pytest.mark.parametrize("small_tmp", [6 << 20], indirect=True)  # room to start the run on the host (4 MiB free)
def test_the_hosts_tmp_filling_during_an_on_host_run_does_not_turn_a_good_backup_into_exit_1(small_tmp, host, site):
    """A Linux box backs up an ESXi 7 host in SSH mode, so hotvcb runs on the host from its build in
    /tmp/hotvcb-onhost, with the run's output and report kept in a folder there. While the disk is
    copied, the host's /tmp ramdisk fills up (vmkernel's own files, another script, hotvcb's own
    default log in /tmp/hotvcb.work). The backup completes, sealed, snapshot removed, and the host's run
    says `All VMs backed up OK!`; but the client then says `ERROR: the run on the host ended without its
    report (exit 1)` and exits 1, which README reserves for `usage, config or lock problem ... (no VM
    was started)`: the monitoring pages the admin for a night whose backup is good. The log and report
    are copies that never stop a run (README): at worst this is exit 9, all OK but a copy was lost."""
    host.create_vm("web", "datastore1", [{"size": "4M"}], power="on")
    host.set_fault("clone.delay", 3)
    folder = small_tmp / "onhost"
    run = subprocess.Popen(site.argv("backup", "-m", "web", "-g", write_conf(host)), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=dict(site.env(), HOTVCB_HOST_FOLDER=str(folder)),
                           cwd=REPO)
    try:
        wait_for(lambda: copying(host, "web"), timeout=60, what="the disk copy")
        _fill(small_tmp)  # the ramdisk is full from here on
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert "HOST: local (" in out and "going file by file" not in out, out  # the run did go to the host
    assert len(sealed(host, "web")) == 1, out  # the backup is good
    finals = [l for l in out.splitlines() if "Final status" in l]
    assert run.returncode in (0, 9), out
    assert "All VMs backed up OK" in finals[-1], out



@needs_sshd
@pytest.mark.parametrize("small_tmp", [224 << 10], indirect=True)  # the host's /tmp too full to run hotvcb there
def test_a_restore_over_ssh_that_goes_file_by_file_names_the_esxi_host_it_restores_on(small_tmp, host, site):
    """The host's /tmp ramdisk is nearly full, so `hotvcb --host root@esxi01 restore --latest web ...`
    says it goes file by file, and restores. Its log (and the copy the admin keeps, or mails) then
    starts `HOST: <the Linux box's own name>`, as though the VM had been restored there; the same
    command on a host with room runs on the host and logs `HOST: esxi01`, and a backup's log names the
    ESXi host in both modes. The HOST line should name the host the restore works on."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    r = subprocess.run(site.argv("backup", "-m", "web", "-g", conf), capture_output=True, text=True, env=site.env(),
                       cwd=REPO, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(site.argv("restore", "--latest", "web", "-g", conf, "--datastore", "datastore1", "--name", "web2"),
                       capture_output=True, text=True, env=dict(site.env(), HOTVCB_HOST_FOLDER=str(small_tmp / "onhost")),
                       cwd=REPO, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "going file by file" in out, out
    (line,) = [l for l in out.splitlines() if " HOST: " in l]
    here = os.uname().nodename
    assert ("esxi01" in line or "127.0.0.1" in line) and not line.endswith("HOST: %s" % here), line



@needs_sshd
@pytest.mark.parametrize("small_tmp", [8 << 20], indirect=True)
def test_a_read_only_tmp_on_the_host_is_named_as_such_when_ssh_mode_goes_file_by_file(small_tmp, host, site):
    """The host's /tmp went read-only (a ramdisk remounted after an error; here a tmpfs remounted ro).
    `hotvcb --host root@esxi01 backup` rightly goes file by file, but the reason the log gives is
    `on the host: [Errno 2] No such file or directory: '/tmp/hotvcb-onhost'`: the admin looks for a
    folder that hotvcb should have made itself, while the cause, `Read-only file system`, which mkdir
    said, was dropped. The reason should be what failed."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmp)], check=True)
    r = subprocess.run(site.argv("backup", "-m", "web", "-g", write_conf(host)), capture_output=True, text=True,
                       env=dict(site.env(), HOTVCB_HOST_FOLDER=str(small_tmp / "onhost")), cwd=REPO, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and len(sealed(host, "web")) == 1, out
    (why,) = [l for l in out.splitlines() if "going file by file" in l]
    assert "Read-only file system" in why, why
