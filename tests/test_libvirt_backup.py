"""The libvirt driver against a real libvirtd and a booted TCG guest that writes and checksums (tests/kvmguest.py).

What must hold: a running domain is backed up hot, the backup is the disk at
one instant (records 0..N of the guest, exactly) and the guest loses nothing;
the domain is not tainted and nothing of ours is left (job, scratch, stale
checkpoint); the second backup is a qcow2 overlay on the first holding only
the clusters written since (counted) and restores identically.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
from datetime import datetime

import pytest

import kvmguest
from kvmguest import libvirt_exclusive  # noqa: F401  (the fixture)
from hotvcb.localshell import LocalShell
from hotvcb.store import health, layout
from kvmguest import Guest, MiB, expected_region, last_record, needs_libvirt, read_region, region_sha, virsh
from qemuvm import PYTHON, env, kill_tree, qemu_img, slow_qemu_img, wait_until

pytestmark = needs_libvirt
CLUSTER = 64 << 10


@pytest.fixture(scope="module")
def lab(libvirt_exclusive):
    root = kvmguest.scratch("hvl")

    class Lab:
        volume = os.path.join(root, "backups")
        workdir = os.path.join(root, "work")
        guests = []

        def guest(self, name):
            folder = os.path.join(root, name)
            os.makedirs(folder)
            os.chmod(folder, 0o755)
            g = Guest(name, folder)
            self.guests.append(g)
            return g

        def conf(self, **keys):
            return kvmguest.write_conf(root, self.volume, **keys)

        def argv(self, *args, **keys):
            return [PYTHON, "-m", "hotvcb", "--libvirt", "backup", "-g", self.conf(**keys), "-w", self.workdir] + list(args)

        def backup(self, name, **keys):
            r = subprocess.run(self.argv("-m", name, **keys), capture_output=True, text=True, timeout=300, env=env())
            return r.returncode, r.stdout + r.stderr

        def backups(self, name):
            return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(self.volume, name, "*", "STATUS.ok")))

    lab = Lab()
    os.makedirs(lab.volume)
    yield lab  # what follows runs whatever the tests did
    for g in lab.guests:
        g.remove()
    kvmguest.remove_scratch(root)


def ours_left(name):
    """Anything of ours libvirt still holds for the domain: a backup job, our scratch folders."""
    job = virsh("backup-dumpxml", name, check=False)
    return (["job"] if job.returncode == 0 else []) + kvmguest.scratch_left(name)


def checkpoints(name):
    return virsh("checkpoint-list", name, "--name").stdout.split()


def top_clusters(image):
    """Offsets of the clusters the image's own (top) layer holds."""
    out = json.loads(qemu_img("map", "--output=json", image).stdout)
    return {off for e in out if e["depth"] == 0 and e["data"]
            for off in range(e["start"], e["start"] + e["length"], CLUSTER)}


def dirtied(first, last):
    return {kvmguest.record(n)[0] // CLUSTER * CLUSTER for n in range(first, last + 1)}


NAME = "hv lab1"  # a space: names are literal


@pytest.fixture(scope="module")
def guest(lab):
    """One booted guest for the module (a boot costs ~5 CPU-s under TCG, more wall on a busy machine); the
    tests go on from each other's state."""
    return lab.guest(NAME)


def test_hot_backup_then_incremental_is_exact_and_leaves_nothing(lab, guest):
    name, g = NAME, guest
    before = g.wait_writes(30)
    code, out = lab.backup(name)
    after = g.console()[0][-1]
    assert code == 0, out
    assert "no checkpoint of ours to start from: a full backup" in out
    (first,) = lab.backups(name)
    assert sorted(os.listdir(first)) == ["STATUS.ok", "domain.xml", "hotvcb-checkpoint", "hotvcb.json", "vda.qcow2"]
    assert virsh("domuuid", name).stdout.strip() in open(os.path.join(first, "domain.xml")).read()

    # the backup is the disk at one instant: exactly records 0..n1, n1 between before and after the run
    region = read_region(os.path.join(first, "vda.qcow2"))
    n1 = last_record(region)
    assert before <= n1 <= after and region == expected_region(g.initial, n1), (before, n1, after)
    [cp1] = checkpoints(name)
    recorded_name, recorded_at = open(os.path.join(first, "hotvcb-checkpoint")).read().splitlines()
    assert recorded_name == cp1
    # the second line is libvirt's creation time of that checkpoint (what tells it from one made again)
    created = re.search(r"<creationTime>(\d+)</creationTime>", virsh("checkpoint-dumpxml", name, cp1).stdout)
    assert datetime.strptime(recorded_at, "%Y-%m-%d %H:%M:%S %z").timestamp() == int(created.group(1)), recorded_at
    assert not ours_left(name)

    g.wait_writes(len(g.console()[0]) + 40)
    g.wait_agent()
    code, out = lab.backup(name, VM_SNAPSHOT_QUIESCE=1)
    assert code == 0, out
    # quiesced by the guest agent, and thawed again (its own log on the guest's console)
    commands = re.findall(r'"execute":"(guest-fsfreeze-\w+)"', open(g.console_path, errors="replace").read())
    assert commands == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"], commands
    assert "not quiesced" not in out
    assert "vda is incremental on %s" % os.path.basename(first) in out
    second = lab.backups(name)[-1]
    disk = os.path.join(second, "vda.qcow2")
    info = json.loads(qemu_img("info", "--output=json", disk).stdout)
    assert info["backing-filename"] == "../%s/vda.qcow2" % os.path.basename(first)
    region = read_region(disk)
    n2 = last_record(region)
    assert n2 > n1 + 30 and region == expected_region(g.initial, n2)
    # only what the guest wrote since the first backup is in the incremental: cluster for cluster
    held = top_clusters(disk)
    assert held == dirtied(n1 + 1, n2), (len(held), len(dirtied(n1 + 1, n2)))
    # and is smaller than the full backup (the guest's pace sets how much: a fixed 8 MiB bound failed
    # once at load 10, when the guest wrote 8 MiB of records between the two backups)
    assert len(held) < len(top_clusters(os.path.join(first, "vda.qcow2"))) // 2

    # restores identically: the whole disk is the initial one with records 0..n2
    expected = os.path.join(lab.volume, "expected.raw")
    shutil.copyfile(g.initial, expected)
    with open(expected, "r+b") as f:
        f.write(expected_region(g.initial, n2))
    restored = os.path.join(lab.volume, "restored.raw")
    assert qemu_img("convert", "-O", "raw", disk, restored).returncode == 0
    assert qemu_img("compare", "-f", "raw", "-F", "raw", expected, restored).returncode == 0

    assert checkpoints(name) == [open(os.path.join(second, "hotvcb-checkpoint")).read().splitlines()[0]]
    assert not ours_left(name)
    assert "taint" not in virsh("dumpxml", name).stdout
    assert "taint" not in g.qemu_log_text()



def guest_lost_nothing(g):
    """Every record the guest reported is on its disk, every checksum it read back was right (stops it)."""
    last = g.wait_writes(len(g.console()[0]) + 10)
    virsh("destroy", g.name)
    writes, sums, errors = g.console()
    live = read_region(g.image)
    assert not errors and last_record(live) >= writes[-1] >= last
    assert live == expected_region(g.initial, last_record(live))
    assert sums and all(region_sha(expected_region(g.initial, n)) == s for n, s in sums.items())


def test_kill_9_mid_backup_keeps_the_vm_and_cleanup_leaves_nothing(lab, guest, tmp_path):
    name, g = NAME, guest
    [good_cp] = checkpoints(name)
    p = subprocess.Popen(lab.argv("-m", name, DISK_BACKUP_FORMAT="raw"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env(slow_qemu_img(str(tmp_path / "bin"), "2M")))
    try:
        wait_until(lambda: glob.glob(os.path.join(lab.volume, name, "*-partial", "vda.raw")), 60, "the copy")
        assert len(checkpoints(name)) == 2 and ours_left(name)
    finally:
        kill_tree(p.pid)
        p.wait(10)
    assert virsh("domstate", name).stdout.strip() == "running"
    g.wait_writes(len(g.console()[0]) + 20)  # the guest goes on writing, through the job's copy-before-write

    r = subprocess.run([PYTHON, "-m", "hotvcb", "--libvirt", "cleanup", "-g", lab.conf(), "-w", lab.workdir],
                       capture_output=True, text=True, timeout=120, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert not ours_left(name)
    assert checkpoints(name) == [good_cp]  # the dead run's is gone, the last good backup's stays
    assert not glob.glob(os.path.join(lab.volume, name, "*-partial"))
    assert "taint" not in virsh("dumpxml", name).stdout


def judge(folder):
    verdict = health.judge(LocalShell(), layout.from_path(LocalShell(), folder))
    return verdict.state, verdict.reason


def test_sigterm_mid_backup_ends_the_job_at_once(lab, guest, tmp_path):
    name = NAME
    [good_cp] = checkpoints(name)
    p = subprocess.Popen(lab.argv("-m", name, DISK_BACKUP_FORMAT="raw"), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env(slow_qemu_img(str(tmp_path / "bin"), "2M")))
    try:
        wait_until(lambda: glob.glob(os.path.join(lab.volume, name, "*-partial", "vda.raw")), 60, "the copy")
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    finally:
        kill_tree(p.pid)
    assert p.returncode == 2, out
    assert not ours_left(name) and checkpoints(name) == [good_cp], out
    assert not glob.glob(os.path.join(lab.volume, name, "*-partial"))
    assert virsh("domstate", name).stdout.strip() == "running"


def test_sigterm_while_backup_begin_runs_leaves_no_job_and_keeps_the_checkpoint(lab, guest, tmp_path):
    """The signal is pending while libvirt starts the job (virsh calls are never cut short): the job
    it started, and its checkpoint, are ended by the run itself on its way out."""
    [good_cp] = checkpoints(NAME)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "virsh").write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = backup-begin ] && kill -TERM $PPID; done\n'
                                   'exec %s "$@"\n' % shutil.which("virsh"))
    (bin_dir / "virsh").chmod(0o755)
    r = subprocess.run(lab.argv("-m", NAME), capture_output=True, text=True, timeout=300, env=env(str(bin_dir)))
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Removing snapshot" in out, out
    assert not ours_left(NAME) and checkpoints(NAME) == [good_cp], out
    assert not glob.glob(os.path.join(lab.volume, NAME, "*-partial"))
    assert virsh("domstate", NAME).stdout.strip() == "running"


def backing(folder):
    return json.loads(qemu_img("info", "--output=json", os.path.join(folder, "vda.qcow2")).stdout).get("backing-filename")


def test_rotation_keeps_an_incrementals_bases_and_a_lost_base_or_checkpoint_means_full(lab, guest):
    name = NAME
    b1, b2 = lab.backups(name)
    code, out = lab.backup(name, VM_BACKUP_ROTATION_COUNT=1, ENABLE_COMPRESSION=1)
    assert code == 0, out
    assert "an incremental backup is kept as a folder" in out  # packed, it could not reach its base
    b3 = lab.backups(name)[-1]
    assert backing(b3) == "../%s/vda.qcow2" % os.path.basename(b2)
    assert lab.backups(name) == [b1, b2, b3]  # count 1, but b3 stands on b2, which stands on b1
    assert "Keeping %s" % b1 in out and "Keeping %s" % b2 in out

    shutil.rmtree(b1)  # the base is gone (by hand): what stands on it is not good, so the next one is full
    code, out = lab.backup(name, VM_BACKUP_ROTATION_COUNT=1)
    assert code == 0, out
    assert "base backup %s is gone" % os.path.basename(b1) in out and "a full backup instead" in out
    b4 = lab.backups(name)[-1]
    assert backing(b4) is None
    assert lab.backups(name) == [b2, b3, b4]  # rotation deletes nothing while it has no more good ones than its count
    assert [judge(b) for b in (b2, b3, b4)] == [
        ("incomplete", "its base backup %s is gone" % os.path.basename(b1)),
        ("incomplete", "its base backup %s is not good: its base backup %s is gone" % (
            os.path.basename(b2), os.path.basename(b1))),
        ("good", "")]

    virsh("checkpoint-delete", name, checkpoints(name)[0])  # by hand
    code, out = lab.backup(name, VM_BACKUP_ROTATION_COUNT=2)
    assert code == 0, out
    assert "no checkpoint of ours to start from: a full backup" in out
    assert backing(lab.backups(name)[-1]) is None and len(checkpoints(name)) == 1

    # a backup whose marker names its checkpoint but no creation time (as before they were recorded)
    # cannot prove its checkpoint is the one libvirt has now: the next backup is full
    marker = os.path.join(lab.backups(name)[-1], "hotvcb-checkpoint")
    first_line = open(marker).read().splitlines()[0]
    with open(marker, "w") as f:
        f.write(first_line + "\n")
    code, out = lab.backup(name, VM_BACKUP_ROTATION_COUNT=2)
    assert code == 0 and "records no creation time of checkpoint" in out, out
    assert backing(lab.backups(name)[-1]) is None and len(checkpoints(name)) == 1


def test_guest_hooks_run_inside_the_domain_through_libvirts_agent_channel(lab, guest):
    guest.wait_writes(5)  # booted: its agent runs before it writes
    guest.wait_agent()
    said = '"$HOTVCB_PHASE|$HOTVCB_RESULT|$HOTVCB_VM|$(cat /proc/cmdline)"'
    code, out = lab.backup(NAME, GUEST_PRE_BACKUP_HOOK="echo " + said, GUEST_POST_BACKUP_HOOK="echo " + said)
    assert code == 0, out
    # the guest kernel's command line: the commands ran in the guest, with the hook's environment
    assert "%s: in-guest pre-hook: pre||%s|%s" % (NAME, NAME, kvmguest.CMDLINE) in out, out
    assert "%s: in-guest post-hook: post|ok|%s|%s" % (NAME, NAME, kvmguest.CMDLINE) in out, out
    assert (out.index("in-guest pre-hook") < out.index("Creating Snapshot") < out.index("Removing snapshot")
            < out.index("in-guest post-hook")), out
    assert not ours_left(NAME)
    assert "tainted: custom-ga-command" in guest.qemu_log_text()  # as docs/kvm.md says

    before = lab.backups(NAME)
    code, out = lab.backup(NAME, GUEST_PRE_BACKUP_HOOK="echo queue not drained; exit 5")
    assert code == 6 and "in-guest pre-backup hook of %s failed (exit 5): queue not drained" % NAME in out, out
    assert "Creating Snapshot" not in out and lab.backups(NAME) == before and not ours_left(NAME)


# every virsh call of a backup of the running domain, in order (`||` marks those asked at once, in
# any order): the name, both XMLs, the leftover check with the checkpoints beside the power state
# (the first VM's questions, jobs/lookahead.py), the job's begin (its exports are the ones asked
# for), its end, and the checkpoint the last backup held
FULL = ["list", "dumpxml || dumpxml", "backup-dumpxml || checkpoint-list || domstate", "backup-begin",
        "checkpoint-list", "backup-dumpxml", "domjobabort", "backup-dumpxml"]
INCREMENTAL = FULL + ["checkpoint-delete"]


def verbs(calls):
    """The virsh verbs of a run, the questions asked at once joined as `a || b`, and the look
    whether the job has ended, which libvirt may need asked again after domjobabort, once."""
    said = [c.split()[c.split().index("qemu:///system") + 1] for c in calls]
    for group in (("dumpxml", "dumpxml"), ("backup-dumpxml", "checkpoint-list", "domstate")):
        at = [i for i, v in enumerate(said) if v in group][:len(group)]
        assert sorted(said[i] for i in at) == sorted(group) and at[-1] == at[0] + len(group) - 1, said
        said[at[0]:at[-1] + 1] = [" || ".join(group)]
    end = said.index("domjobabort") + 1
    while said[end:end + 2] == ["backup-dumpxml", "backup-dumpxml"]:
        del said[end]
    return said


def test_virsh_calls_of_a_full_and_an_incremental_and_other_tools_checkpoints_add_none(lab, guest, tmp_path):
    """Every virsh call is a process start and a connection (~25 ms on an idle host, ~80 ms under
    load): an incremental copies a few MiB, so they decide its time. Counted by a virsh that logs
    each call; other tools' checkpoints add none (no checkpoint XML but where a leftover is told ours)."""
    calls, bin_dir = tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "virsh").write_text('#!/bin/sh\necho "$*" >> %s\nexec %s "$@"\n' % (calls, shutil.which("virsh")))
    (bin_dir / "virsh").chmod(0o755)

    def backup(shown):
        if calls.exists():
            calls.unlink()
        r = subprocess.run(lab.argv("-m", NAME), capture_output=True, text=True, timeout=300, env=env(str(bin_dir)))
        assert r.returncode == 0 and shown in r.stdout + r.stderr, r.stdout + r.stderr
        return calls.read_text().splitlines()

    for cp in checkpoints(NAME):  # whatever ran before: the next backup is a full one
        virsh("checkpoint-delete", NAME, cp)
    full = backup("no checkpoint of ours to start from: a full backup")
    assert verbs(full) == FULL, full
    guest.wait_writes(len(guest.console()[0]) + 5)
    alone = backup("vda is incremental on")
    assert verbs(alone) == INCREMENTAL, alone
    others = ["other-tool-%d" % i for i in range(3)]
    try:
        for other in others:
            virsh("checkpoint-create-as", NAME, other)
        beside = backup("vda is incremental on")
    finally:
        for other in others:
            virsh("checkpoint-delete", NAME, other, check=False)
    assert verbs(beside) == INCREMENTAL, beside
    assert not [c for c in beside if "checkpoint-dumpxml" in c], beside
    assert len(checkpoints(NAME)) == 1 and not ours_left(NAME)


def test_the_guest_lost_nothing(guest):
    guest_lost_nothing(guest)


def test_after_a_crash_the_bitmap_is_not_trusted(lab, guest):
    """QEMU killed (as by a host crash): its checkpoint's bitmap was not saved, so the next backup is full."""
    name = NAME
    if virsh("domstate", name).stdout.strip() != "running":
        virsh("start", name)
    assert lab.backup(name)[0] == 0 and len(checkpoints(name)) == 1
    with open("/run/libvirt/qemu/%s.pid" % name) as f:
        os.kill(int(f.read().strip()), signal.SIGKILL)
    wait_until(lambda: virsh("domstate", name).stdout.strip() == "shut off", 30, "libvirt to see the crash")
    virsh("start", name)
    code, out = lab.backup(name)
    assert code == 0, out
    assert "no incremental from checkpoint" in out, out
    assert backing(lab.backups(name)[-1]) is None and len(checkpoints(name)) == 1


def test_power_down_before_backup_copies_the_image_and_starts_the_domain_again(lab, guest):
    """POWER_VM_DOWN_BEFORE_BACKUP on libvirt: `virsh shutdown` (this guest has nothing that acts on
    it: its agent finds no shutdown command, its kernel no ACPI daemon), `virsh destroy` after
    ITER_TO_WAIT_SHUTDOWN, the image copied while the domain is off (no backup job, no checkpoint),
    `virsh start` after."""
    name, g = NAME, guest
    if virsh("domstate", name).stdout.strip() != "running":
        virsh("start", name)
    before = checkpoints(name)
    last = g.wait_writes(len(g.console()[0]) + 5)
    code, out = lab.backup(name, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="1s",
                           POWER_DOWN_TIMEOUT="60s")
    assert code == 0, out
    assert "Hard power off occured for %s" % name in out and "%s is powered off" % name in out, out
    assert "Creating Snapshot" not in out and "Powering on %s" % name in out, out
    assert virsh("domstate", name).stdout.strip() == "running"
    b = lab.backups(name)[-1]
    assert backing(b) is None and not os.path.exists(os.path.join(b, "hotvcb-checkpoint"))
    # the disk as the power-off left it: every record the guest had reported, a prefix, nothing torn
    region = read_region(os.path.join(b, "vda.qcow2"))
    assert last_record(region) >= last and region == expected_region(g.initial, last_record(region))
    assert checkpoints(name) == before and not ours_left(name)
    g.wait_writes(5)  # booted again and writing (its console starts anew with each start)


def test_cold_snapshot_starts_the_domain_paused_for_its_job_and_a_killed_run_leaves_it_to_the_next(lab, guest):
    """COLD_SNAPSHOT: libvirt's backup job needs a running domain, so the domain shut down for it is
    started paused (its disks as shut down, nothing of the guest running), the job begun, and the
    guest resumed for the copy. A run killed while the domain is paused: the next run ends its job
    and resumes it."""
    name, g = NAME, guest
    if virsh("domstate", name).stdout.strip() != "running":
        virsh("start", name)
    last = g.wait_writes(len(g.console()[0]) + 5)
    down = dict(COLD_SNAPSHOT=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="60s")
    code, out = lab.backup(name, **down)
    assert code == 0, out
    assert "Hard power off occured for %s" % name in out and "%s: started paused for its backup job" % name in out
    assert "%s was down for" % name in out and "(COLD_SNAPSHOT)" in out, out
    assert out.index("started paused") < out.index("Powering on %s" % name) < out.index("Backing up"), out
    b = lab.backups(name)[-1]
    region = read_region(os.path.join(b, "vda.qcow2"))
    assert last_record(region) >= last and region == expected_region(g.initial, last_record(region))
    assert checkpoints(name) == [open(os.path.join(b, "hotvcb-checkpoint")).read().splitlines()[0]] and not ours_left(name)
    assert virsh("domstate", name).stdout.strip() == "running"

    g.wait_writes(5)
    r = subprocess.run(lab.argv("-m", name, **down), capture_output=True, text=True, timeout=300,
                       env=dict(env(), HOTVCB_CRASH_AT="snapshot-created"))
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert virsh("domstate", name).stdout.strip() == "paused" and ours_left(name)
    code, out = lab.backup(name)
    assert code == 0, out
    assert "powered it off for a backup and did not finish; powering it on" in out, out
    assert virsh("domstate", name).stdout.strip() == "running" and not ours_left(name)
    assert len(checkpoints(name)) == 1
    g.wait_writes(5)


def test_quiesce_without_an_agent_backs_up_crash_consistent(lab):
    """A domain whose guest runs no agent (here: no kernel, the firmware idles)."""
    folder = os.path.join(os.path.dirname(lab.volume), "noagent")
    os.makedirs(folder)
    os.chmod(folder, 0o755)
    image = os.path.join(folder, "vda.qcow2")
    assert qemu_img("create", "-q", "-f", "qcow2", image, "8M").returncode == 0
    xml = os.path.join(folder, "domain.xml")
    with open(xml, "w") as f:
        f.write(kvmguest.domain_xml("hv noagent", image, "qcow2", os.path.join(folder, "console.log")))
    kvmguest.define(xml, "hv noagent", transient=True)  # gone with its QEMU, checkpoints and all
    try:
        code, out = lab.backup("hv noagent", VM_SNAPSHOT_QUIESCE=1)
        assert code == 0, out
        assert "hv noagent: not quiesced (" in out and "backing up crash-consistent" in out
        assert not ours_left("hv noagent")
    finally:
        kvmguest.undefine("hv noagent")


def test_a_domain_that_is_off_is_copied_from_its_image(lab):
    folder = os.path.join(os.path.dirname(lab.volume), "off")
    os.makedirs(folder)
    os.chmod(folder, 0o755)
    raw = os.path.join(folder, "data.raw")
    image = kvmguest.random_qcow2(raw, os.path.join(folder, "vda.qcow2"), 4 * MiB)
    xml = os.path.join(folder, "domain.xml")
    with open(xml, "w") as f:
        f.write(kvmguest.domain_xml("hv off", image, "qcow2", os.path.join(folder, "console.log"), agent=False))
    kvmguest.define(xml, "hv off")
    try:
        code, out = lab.backup("hv off", DISK_BACKUP_FORMAT="thin")
        assert code == 0, out
        (b,) = lab.backups("hv off")
        assert qemu_img("compare", "-f", "raw", raw, os.path.join(b, "vda.vmdk")).returncode == 0
        assert virsh("domstate", "hv off").stdout.strip() == "shut off" and not checkpoints("hv off")
    finally:
        kvmguest.undefine("hv off")


def test_a_repository_refuses_a_domain_before_any_job(lab, guest):
    """The repository reads a base image as a file held still by the snapshot; libvirt's job holds
    nothing still, so reading the live image would store a disk of no one instant."""
    before = checkpoints(NAME)
    code, out = lab.backup(NAME, VM_BACKUP_REPOSITORY=os.path.join(os.path.dirname(lab.volume), "repo"))
    assert code == 6 and "a repository cannot take libvirt domains yet" in out, out
    assert checkpoints(NAME) == before and not ours_left(NAME)

