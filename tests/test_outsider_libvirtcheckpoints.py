"""Outside attacks on libvirt checkpoints, foreign jobs and power modes, against one booted TCG guest.

The tests go on from each other's state (one boot). Every backup is checked against the disk
at its instant: the guest's records 0..N for one N, over the initial (random) disk.
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

import kvmguest
from kvmguest import libvirt_exclusive  # noqa: F401  (the fixture)
from kvmguest import Guest, MiB, expected_region, last_record, needs_libvirt, virsh
from qemuvm import PYTHON, env, kill_tree, qemu_img, slow_qemu_img, wait_until

pytestmark = needs_libvirt
NAME = "hv ckpt \u00fc'\"$(id)"  # spaces, quotes, an umlaut, a shell substitution: all literal
SIZE = 16 * MiB


def _xml_name(name):
    return name.replace("&", "&amp;").replace("'", "&apos;").replace('"', "&quot;").replace("<", "&lt;")


class OddGuest(Guest):
    """kvmguest.Guest, its name escaped in the domain XML."""

    def __init__(self, name, folder):
        self.name, self.folder = name, folder
        self.initial = os.path.join(folder, "initial.raw")
        self.image = kvmguest.random_qcow2(self.initial, os.path.join(folder, "vda.qcow2"), SIZE, SIZE)
        self.console_path = os.path.join(folder, "console.log")
        kernel, initrd = kvmguest.boot_files(folder)
        xml = os.path.join(folder, "domain.xml")
        with open(xml, "w") as f:
            f.write(kvmguest.domain_xml(_xml_name(name), self.image, "qcow2", self.console_path, kernel, initrd))
        kvmguest.define(xml, name)
        self.qemu_log, self._log_from = "/dev/null", 0
        virsh("start", name)


@pytest.fixture(scope="module")
def lab(libvirt_exclusive):  # noqa: F811
    root = kvmguest.scratch("hvc")

    class Lab:
        volume = os.path.join(root, "backups")
        workdir = os.path.join(root, "work")
        guest = None

        def conf(self, **keys):
            return kvmguest.write_conf(root, self.volume, **keys)

        def argv(self, verb="backup", *args, **keys):
            return [PYTHON, "-m", "hotvcb", "--libvirt", "qemu:///system", verb, "-g", self.conf(**keys),
                    "-w", self.workdir] + list(args)

        def run(self, verb="backup", bin_dir=None, extra_env=None, **keys):
            args = ("-m", NAME) if verb == "backup" else ()
            r = subprocess.run(self.argv(verb, *args, **keys), capture_output=True, text=True, timeout=300,
                               env=dict(env(bin_dir), **(extra_env or {})))
            return r.returncode, r.stdout + r.stderr

        def backups(self):
            return sorted(os.path.dirname(p) for p in glob.glob(
                os.path.join(glob.escape(self.volume), glob.escape(NAME), "*", "STATUS.ok")))

        def partials(self):
            return glob.glob(os.path.join(glob.escape(self.volume), glob.escape(NAME), "*-partial"))

    lab = Lab()
    os.makedirs(lab.volume)
    folder = os.path.join(root, "guest")
    os.makedirs(folder)
    os.chmod(folder, 0o755)
    try:
        lab.guest = OddGuest(NAME, folder)
        yield lab
    finally:
        virsh("domjobabort", NAME, check=False)
        if lab.guest is not None:
            lab.guest.remove()
        kvmguest.remove_scratch(root)


def state():
    return virsh("domstate", NAME).stdout.strip()


def checkpoints():
    return virsh("checkpoint-list", NAME, "--name").stdout.split()


def job_running():
    return virsh("backup-dumpxml", NAME, check=False).returncode == 0


def forget_checkpoints():
    """After a test that may have left a wrong backup: the next backup is full (none builds on it)."""
    for cp in reversed(checkpoints()):
        virsh("checkpoint-delete", NAME, cp, check=False)


def ensure_running(g, lab=None):
    if state() == "paused":
        virsh("resume", NAME)
    elif state() != "running":
        virsh("start", NAME)
    n = g.wait_writes(len(g.console()[0]) + 5)
    if lab is not None and not checkpoints():  # a test before left none: a full backup to build on
        code, out = lab.run()
        assert code == 0 and len(checkpoints()) == 1, out
    return n


def disk_at(g, n):
    """The whole disk after records 0..n on the initial one."""
    region = expected_region(g.initial, n)
    with open(g.initial, "rb") as f:
        data = f.read()
    return region + data[len(region):]


def content(image):
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "r.raw")
        subprocess.run(["qemu-img", "convert", "-O", "raw", image, raw], check=True, capture_output=True, timeout=120)
        with open(raw, "rb") as f:
            return f.read()


def assert_one_instant(g, backup, at_least, out=""):
    """The backup's disk is exactly the disk after records 0..n, n >= at_least (nothing lost, nothing torn)."""
    data = content(os.path.join(backup, "vda.qcow2"))
    n = last_record(data[:kvmguest.SLOTS * kvmguest.RECORD])
    assert n >= at_least, (n, at_least)
    want = disk_at(g, n)
    if data != want:
        lost = [i for i in range(n + 1) if data[kvmguest.record(i)[0]:][:kvmguest.RECORD] == kvmguest.record(i)[1]
                and False] or [i for i in range(n + 1) if kvmguest.record(i)[1][:20] not in data]
        raise AssertionError("backup %s (backing %s) is not the disk after record %d: records %s are missing\n%s" % (
            os.path.basename(backup), backing(backup), n, lost, out))
    return n


def backing(backup):
    import json
    info = json.loads(qemu_img("info", "--output=json", os.path.join(backup, "vda.qcow2")).stdout)
    return info.get("backing-filename")


def clean(out):
    assert "Traceback" not in out, out


# -- the base: a full backup, then an incremental, both the disk at their instant ----------------------
def test_full_then_incremental_of_an_oddly_named_domain_are_each_the_disk_at_their_instant(lab):
    g = lab.guest
    n0 = g.wait_writes(10)
    code, out = lab.run()
    assert code == 0, out
    (first,) = lab.backups()
    n1 = assert_one_instant(g, first, n0)
    g.wait_writes(len(g.console()[0]) + 8)
    n_before = g.console()[0][-1]
    code, out = lab.run()
    assert code == 0 and "vda is incremental on" in out, out
    second = lab.backups()[-1]
    assert backing(second) == "../%s/vda.qcow2" % os.path.basename(first)
    assert assert_one_instant(g, second, n_before) > n1
    assert len(checkpoints()) == 1 and not job_running()


# -- checkpoints deleted, redefined and made again by hand ------------------------------------------
def test_a_checkpoint_deleted_by_hand_with_metadata_only_then_redefined(lab):
    """`checkpoint-delete --metadata` leaves the bitmap in the image; `checkpoint-create --redefine`
    brings the metadata back. The next backups must still each be the disk at their instant."""
    g = lab.guest
    ensure_running(g, lab)
    [cp] = checkpoints()
    saved = virsh("checkpoint-dumpxml", NAME, cp).stdout
    virsh("checkpoint-delete", NAME, cp, "--metadata")
    n_before = g.wait_writes(len(g.console()[0]) + 5)
    code, out = lab.run()
    assert code == 0, out
    clean(out)
    assert_one_instant(g, lab.backups()[-1], n_before)
    path = os.path.join(lab.workdir, "..", "cp-meta.xml")
    with open(path, "w") as f:
        f.write(saved)
    virsh("checkpoint-create", NAME, path, "--redefine", check=False)  # the old one back beside the new
    n_before = g.wait_writes(len(g.console()[0]) + 5)
    code, out = lab.run()
    assert code == 0, out
    assert_one_instant(g, lab.backups()[-1], n_before)
    assert not job_running()
    for other in checkpoints():  # leave one checkpoint of ours for the tests after
        if other == cp and len(checkpoints()) > 1:
            virsh("checkpoint-delete", NAME, other, check=False)


def test_a_checkpoint_recreated_by_hand_under_our_name_is_not_taken_for_ours(lab):
    """Our checkpoint deleted (its bitmap merged away) and a new one made under its name from its
    own saved XML, description and all: its bitmap starts at the new instant. An incremental from
    it would miss everything the guest wrote between the last backup and the re-creation."""
    g = lab.guest
    ensure_running(g, lab)
    [cp] = checkpoints()
    saved = virsh("checkpoint-dumpxml", NAME, cp).stdout
    g.wait_writes(len(g.console()[0]) + 8)  # written after the last backup: dirty in our bitmap only
    virsh("checkpoint-delete", NAME, cp)
    path = os.path.join(lab.workdir, "..", "cp.xml")
    with open(path, "w") as f:
        f.write(saved)
    made = virsh("checkpoint-create", NAME, path, check=False)
    how = "checkpoint-create of its saved XML"
    if made.returncode != 0:  # libvirt wants no <disks> bitmaps nor creationTime from us: name and description
        virsh("checkpoint-create-as", NAME, cp, "restored by hand")
        how = "checkpoint-create-as (%s)" % made.stderr.strip()
    assert checkpoints() == [cp]
    n_before = g.wait_writes(len(g.console()[0]) + 5)
    try:
        code, out = lab.run()
        assert code == 0, out
        newest = lab.backups()[-1]
        assert_one_instant(g, newest, n_before, how + "\n" + out)  # an incremental missing the writes fails here
        assert len(checkpoints()) == 1 and not job_running()
    finally:
        forget_checkpoints()


def racing_virsh(folder, marker):
    """A virsh that, right before `backup-begin`, deletes the checkpoint named in `marker` and makes it
    again (a user's hand between hotvcb's checkpoint list and its job)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "virsh")
    real = shutil.which("virsh")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = backup-begin ]; then\n'
                '    cp=$(cat %s)\n'
                '    %s -q -c qemu:///system checkpoint-delete "$HV_DOM" "$cp" >/dev/null 2>&1\n'
                '    %s -q -c qemu:///system checkpoint-create-as "$HV_DOM" "$cp" >/dev/null 2>&1\n'
                '    sleep 2\n  fi\ndone\nexec %s "$@"\n' % (marker, real, real, real))
    os.chmod(path, 0o755)
    return folder


def test_a_checkpoint_recreated_during_the_run_is_not_trusted(lab, tmp_path):
    """hotvcb caches the checkpoint list within a run: the base checkpoint is made again (same name,
    fresh bitmap) between that list and `backup-begin`. The backup must still be the disk at its instant."""
    g = lab.guest
    ensure_running(g, lab)
    cps = checkpoints()
    marker = tmp_path / "cp"
    marker.write_text(cps[-1])
    g.wait_writes(len(g.console()[0]) + 8)  # dirty since the last backup
    n_before = g.console()[0][-1]
    try:
        code, out = lab.run(bin_dir=racing_virsh(str(tmp_path / "bin"), str(marker)), extra_env={"HV_DOM": NAME})
        clean(out)
        assert not job_running() and not lab.partials(), out
        if code == 0:
            assert_one_instant(g, lab.backups()[-1], n_before, out)
        assert len(checkpoints()) == 1
    finally:
        forget_checkpoints()


# -- someone else's backup job on the domain ---------------------------------------------------------
def foreign_job_xml(tmp_path, sock_dir):
    xml = tmp_path / "foreign.xml"
    xml.write_text("<domainbackup mode='pull'><server transport='unix' socket='%s/nbd.sock'/>"
                   "<disks><disk name='vda' backup='yes' type='file'><scratch file='%s/scratch.qcow2'/></disk>"
                   "</disks></domainbackup>" % (sock_dir, sock_dir))
    return str(xml)


@pytest.mark.parametrize("allow", [0, 1])
def test_a_foreign_backup_job_is_refused_and_left_running(lab, tmp_path, allow):
    """Another tool's pull job on the domain (virsh backup-begin by hand): hotvcb must refuse the
    domain with a line naming the job, and neither the backup nor `cleanup` may end that job, also
    with ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1 (the key the refusal without it points to)."""
    g = lab.guest
    ensure_running(g)
    cps = checkpoints()
    before = lab.backups()
    sock_dir = kvmguest.scratch("hvf")
    os.chmod(sock_dir, 0o777)
    virsh("backup-begin", NAME, foreign_job_xml(tmp_path, sock_dir))
    try:
        assert job_running()
        code, out = lab.run(ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=allow)
        assert code != 0, out
        clean(out)
        # refused before any job of ours: it is no snapshot, and no key lets a second job start beside it
        assert "another backup job is running on the domain" in out and "ALLOW_VMS" not in out, out
        assert job_running(), "hotvcb ended a backup job that was not its own:\n" + out
        assert sock_dir in virsh("backup-dumpxml", NAME).stdout
        assert lab.backups() == before and not lab.partials(), out
        assert checkpoints() == cps, "the refused run took the last good backup's checkpoint:\n" + out
        code, out = lab.run("cleanup")
        clean(out)
        assert job_running(), "cleanup ended a backup job that was not its own:\n" + out
        assert checkpoints() == cps
        assert state() == "running"
    finally:
        virsh("domjobabort", NAME, check=False)
        kvmguest.remove_scratch(sock_dir)


def test_a_foreign_job_begun_just_before_ours_costs_no_checkpoint(lab, tmp_path):
    """Another tool's job begun between hotvcb's look and its `backup-begin`: libvirt refuses ours
    (its state lock, after a wait). That says nothing about our checkpoint's bitmap: the last good
    backup's checkpoint must stay, and the foreign job run on."""
    g = lab.guest
    ensure_running(g, lab)
    cps = checkpoints()
    before = lab.backups()
    sock_dir = kvmguest.scratch("hvf")
    os.chmod(sock_dir, 0o777)
    xml = foreign_job_xml(tmp_path, sock_dir)
    real = shutil.which("virsh")
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "virsh").write_text(
        '#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = backup-begin ]; then\n'
        '    %s -q -c qemu:///system backup-begin "$HV_DOM" %s >/dev/null 2>&1\n  fi\ndone\nexec %s "$@"\n'
        % (real, xml, real))
    (folder / "virsh").chmod(0o755)
    try:
        code, out = lab.run(bin_dir=str(folder), extra_env={"HV_DOM": NAME})
        assert code != 0, out
        clean(out)
        assert job_running() and sock_dir in virsh("backup-dumpxml", NAME).stdout, out
        assert checkpoints() == cps, "a refused backup-begin cost the last good backup's checkpoint:\n" + out
        assert lab.backups() == before and not lab.partials(), out
    finally:
        virsh("domjobabort", NAME, check=False)
        kvmguest.remove_scratch(sock_dir)
    wait_until(lambda: not job_running(), 30, "the foreign job to end")  # domjobabort may return before it has
    g.wait_writes(len(g.console()[0]) + 3)
    code, out = lab.run()  # the good checkpoint still serves
    assert code == 0 and "vda is incremental on" in out, out


# -- the domain paused by its user before the run -----------------------------------------------------
def test_a_domain_paused_by_its_user_is_backed_up_and_left_paused(lab):
    g = lab.guest
    ensure_running(g)
    virsh("suspend", NAME)
    try:
        n = g.console()[0][-1]
        code, out = lab.run()
        assert code == 0, out
        assert state() == "paused", "hotvcb resumed a domain its user had paused:\n" + out
        # the guest may have been paused between a record's write and its console line: n or n + 1
        assert assert_one_instant(g, lab.backups()[-1], n) <= n + 1
        assert not job_running() and len(checkpoints()) == 1
    finally:
        if state() == "paused":
            virsh("resume", NAME)


# -- kill -9 in the power modes, then `cleanup` (not a backup) puts things right -----------------------
DOWN = dict(ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="60s")


def test_kill_9_while_a_cold_snapshot_domain_is_paused_then_cleanup_resumes_it(lab):
    g = lab.guest
    ensure_running(g)
    good = checkpoints()
    r = subprocess.run(lab.argv("backup", "-m", NAME, COLD_SNAPSHOT=1, **DOWN), capture_output=True, text=True,
                       timeout=300, env=dict(env(), HOTVCB_CRASH_AT="snapshot-created"))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert state() == "paused"
    code, out = lab.run("cleanup")
    assert code == 0, out
    clean(out)
    assert state() == "running", out
    assert not job_running() and not lab.partials(), out
    assert checkpoints() == good, out
    g.wait_writes(5)  # booted again, writing (its console starts anew)
    virsh("suspend", NAME)  # held still: the backup must be the image as it is now
    try:
        code, out = lab.run()
        assert code == 0 and "vda is incremental on" in out, out
        newest = lab.backups()[-1]
        same = qemu_img("compare", "-U", os.path.join(newest, "vda.qcow2"), g.image)
        assert same.returncode == 0, same.stdout + same.stderr
    finally:
        if state() == "paused":
            virsh("resume", NAME)
    assert len(checkpoints()) == 1 and not job_running()


def test_kill_9_mid_copy_with_the_domain_powered_down_then_cleanup_starts_it(lab, tmp_path):
    g = lab.guest
    ensure_running(g)
    p = subprocess.Popen(lab.argv("backup", "-m", NAME, POWER_VM_DOWN_BEFORE_BACKUP=1, **DOWN),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=env(slow_qemu_img(str(tmp_path / "bin"), "1M")))
    try:
        wait_until(lambda: glob.glob(os.path.join(glob.escape(lab.volume), glob.escape(NAME), "*-partial", "vd*"))
                   or p.poll() is not None, 120, "the copy")
        assert p.poll() is None, p.communicate()[0]
        assert state() == "shut off"
    finally:
        kill_tree(p.pid)
    p.communicate(timeout=60)
    code, out = lab.run("cleanup")
    assert code == 0, out
    clean(out)
    assert state() == "running", "the domain hotvcb powered down was left off:\n" + out
    assert not lab.partials(), out
    assert len(checkpoints()) == 1 and not job_running()
