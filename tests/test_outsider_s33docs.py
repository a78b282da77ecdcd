"""Outside tester, session 33 (docs): a new admin reads README.md and docs/*.md and holds the product to each
concrete promise (a command line shown, a limit, a flag, an exit code, a file format detail), on a simulated
ESXi host through the CLI. Each promise the product breaks is a strict xfail until fixed.
Tiny disks, one esxisim host per test. Earlier doc rounds: test_outsider_s28docs.py, test_outsider_s31docs.py."""

import os

import pytest

from qemulab import opened
from qemuvm import needs_qemu
from simhost import backups, hotvcb, needs_root, sealed, snapshot_names, write_conf


@needs_root
def test_a_vm_name_within_the_documented_226_bytes_is_backed_up(host):
    """backup-format.md ("A VM's folder is its name ...") promises: 'a name of at most 226 bytes in UTF-8 (as its
    folder writes it, `%` as `%25`) is backed up; a longer one is refused before anything is written'. A
    Japanese shop names a VM with 70 characters (210 bytes in UTF-8, well inside vSphere's 80-character limit).
    The backup waits a minute, logs 'snapshot hotvcb-snapshot-… has not appeared; hostd may still be creating it',
    then fails: 'cannot write /vmfs/volumes/datastore1/<VM>/.hotvcb-snapshot-asked.<VM>.vmx.run: File name too
    long' - the marker's own name is <VM>.vmx + 31 bytes and its atomic write's temp name (localshell.write_text:
    '.<name>.<pid>-<tid>-<hex>.tmp') some 26 more, so names over ~198 bytes never back up. Every night's run of
    that VM fails (exit 6) although the documented length check let it through.
    Expected: the VM is backed up (exit 0, one sealed backup), or refused up front naming the real limit."""
    name = "\u6570" * 70  # 210 bytes in UTF-8
    vmid = host.create_vm(name, "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, SNAPSHOT_TIMEOUT="3s")  # the failed run otherwise waits a minute for the snapshot
    r = hotvcb(host, "-m", name, "-g", conf, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr
    assert snapshot_names(host, vmid) == [], "snapshot left behind"
    assert r.returncode == 0, (r.returncode, r.stdout[-1500:])
    assert len(sealed(host, name)) == 1, backups(host, name)


@needs_root
def test_a_json_report_lost_at_the_end_is_named_in_the_final_status(host, tmpfs):
    """README (exit codes): '9 all OK but the log could not be written everywhere (or `--json-report`'s file
    ...) ... Whichever the cause, an otherwise OK run's final status starts with its `WARNING: …`, never with
    `All VMs backed up OK!`'; operations.md ('The run report'): 'a report that cannot be written is named in
    the final status and mail, exit 9 for a run otherwise OK'. The admin's cron job writes
    `--json-report /var/lib/monitor/hotvcb.json` for the dashboard; tonight that file system is full. The run
    exits 9, but its log reads '###### Final status: All VMs backed up OK! ######', then 'LOG END', and only
    after that 'warning: cannot write the JSON report …: No space left on device': whoever reads the final
    status (or greps it, as with ghettoVCB) sees a clean night while the dashboard silently shows yesterday.
    Expected: the final status starts with a WARNING naming the JSON report, as a lost log's does."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    full = tmpfs("monitor", "64k")
    try:  # the folder is there (the pre-run check passes), its disk full
        with open(str(full / "fill"), "wb", buffering=0) as f:
            f.write(b"\0" * (128 << 10))
    except OSError:
        pass
    assert os.statvfs(str(full)).f_bavail == 0
    r = hotvcb(host, "-m", "web", "-g", conf, "--json-report", str(full / "hotvcb.json"))
    assert "Traceback" not in r.stdout + r.stderr
    assert r.returncode == 9, (r.returncode, r.stdout[-1500:])
    final = [l for l in r.stdout.splitlines() if "Final status:" in l][-1]
    status = final.split("Final status:", 1)[1].strip()
    assert status.startswith("WARNING") and "JSON report" in status, final


@needs_root
def test_a_dry_run_finds_the_zstd_repository_the_real_run_fails_on(host):
    """README (exit codes): 'a dry run that finds what the real run would fail on ... exits the code that run
    would, its final status ... saying `ERROR: DRY RUN found problems with …; nothing was changed`';
    migrating-from-ghettovcb.md step 2 tells the admin to dry-run the job first. The admin copies the
    repository example from config-reference.md, `VM_BACKUP_REPOSITORY_COMPRESSION=zstd`, onto the ESXi host,
    whose Python has no zstandard (config-reference.md: 'never on ESXi ... refused at creation without the
    package'). `-d dryrun` plans the VM into the repository and ends 'OK, only a dryrun', exit 0; the night's
    run then fails every VM ('VM_BACKUP_REPOSITORY_COMPRESSION=zstd for the new repository …: the zstandard
    package is not installed here (never on ESXi): use zlib', exit 6), and `schedule install` refuses the same
    job with that line - only the dry run, the one check the admin ran, passes it.
    Expected: the dry run ends with the real run's exit code and 'ERROR: DRY RUN found problems with …'."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo",
                      VM_BACKUP_REPOSITORY_COMPRESSION="zstd")
    real = hotvcb(host, "-m", "web", "-g", conf)
    assert real.returncode == 6 and "zstandard" in real.stdout, (real.returncode, real.stdout[-1500:])
    dry = hotvcb(host, "-m", "web", "-g", conf, "-d", "dryrun")
    assert "Traceback" not in dry.stdout + dry.stderr
    final = [l for l in dry.stdout.splitlines() if "Final status:" in l][-1]
    assert dry.returncode == real.returncode and "DRY RUN found problems" in final, (dry.returncode, final)


def _dry_and_real(host, vm, conf):
    dry = hotvcb(host, "-m", vm, "-g", conf, "-d", "dryrun")
    real = hotvcb(host, "-m", vm, "-g", conf)
    assert "Traceback" not in dry.stdout + dry.stderr + real.stdout + real.stderr
    final = [l for l in dry.stdout.splitlines() if "Final status:" in l][-1]
    return dry, real, final


@needs_root
def test_a_dry_run_finds_a_repository_whose_folder_is_not_there(host):
    """config-reference.md: VM_BACKUP_REPOSITORY is 'created on first use inside an existing folder'; README: 'a
    dry run that finds what the real run would fail on ... exits the code that run would, ... `ERROR: DRY RUN
    found problems with …; nothing was changed`'. The admin mistypes the repository's folder
    (`/vmfs/volumes/backup/nope/repo`, `nope` not there) and dry-runs the job as migrating-from-ghettovcb.md
    says: 'OK, only a dryrun', exit 0, the VM planned into 'the repository …'. The night's run fails the VM:
    'VM_BACKUP_REPOSITORY /vmfs/volumes/backup/nope/repo: /vmfs/volumes/backup/nope does not exist (is the
    datastore mounted?)', exit 6. Expected: the dry run names it and exits 6 too."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/nope/repo")
    dry, real, final = _dry_and_real(host, "web", conf)
    assert real.returncode == 6 and "does not exist" in real.stdout, (real.returncode, real.stdout[-1500:])
    assert dry.returncode == real.returncode and "DRY RUN found problems" in final, (dry.returncode, final)


@needs_root
def test_a_dry_run_finds_a_hosted_sparse_disk_the_repository_refuses(host):
    """repository.md ('Using it'): 'Hosted sparse disks (2gbsparse, monolithicSparse) are refused.' README: a
    dry run that finds what the real run would fail on exits that run's code with 'ERROR: DRY RUN found
    problems with …'. A VM whose disk is 2gbsparse (moved over from Workstation, multiextent loaded) is
    dry-run into the repository: 'VMDK: … -> chunks, at most …', 'OK, only a dryrun', exit 0. The real run
    snapshots the VM, then fails: 'copy of …/sp.vmdk failed: a twoGbMaxExtentSparse disk; the repository reads
    flat disks …', exit 6 - the disk's format was known before any change (the pre-flight reads the
    descriptor). Expected: the dry run names the disk and exits 6, as the real run does."""
    host.create_vm("sp", "datastore1", [{"size": "1M", "format": "2gbsparse"}], power="on")
    conf = write_conf(host, VM_BACKUP_REPOSITORY="/vmfs/volumes/backup/repo")
    dry, real, final = _dry_and_real(host, "sp", conf)
    assert real.returncode == 6 and "twoGbMaxExtentSparse" in real.stdout, (real.returncode, real.stdout[-1500:])
    assert dry.returncode == real.returncode and "DRY RUN found problems" in final, (dry.returncode, final)


@needs_root
def test_a_dry_run_of_a_vm_with_an_independent_disk_exits_as_the_real_run(host):
    """README (exit codes): '0 all OK (or a dry run that found nothing wrong; a dry run that finds what the real
    run would fail on ... exits the code that run would ...), 3 all VMs but some disks failed (a disk no
    snapshot can copy, independent or a physical RDM, counts too, as in ghettoVCB ...)'. The admin dry-runs
    the job of a VM with an independent disk: the log warns 'skipping scsi0:1 (ind_1.vmdk): independent disk
    ... is not part of snapshots', and the run ends 'OK, only a dryrun', exit 0 - the wrapper that checks the
    dry run's code sees nothing to look at. The real run ends 'WARNING: All VMs backed up, but some disk(s)
    failed!', exit 3, every night. Expected: the dry run, which already knows the disk is in no backup, ends
    with the code the real run will (3), its status saying so."""
    host.create_vm("ind", "datastore1", [{"size": "1M"}, {"size": "1M", "mode": "independent-persistent"}],
                   power="on")
    conf = write_conf(host)
    dry, real, final = _dry_and_real(host, "ind", conf)
    assert real.returncode == 3, (real.returncode, real.stdout[-1500:])
    assert dry.returncode == real.returncode and "only a dryrun" not in final, (dry.returncode, final)



@needs_root
def test_restore_latest_to_kvm_of_a_mistyped_name_gets_the_close_names(host, tmp_path):
    """README: 'A VM name that matches nothing (backup `-m`/`-f`, restore `--latest`, `schedule install`) is
    answered with the close names: `no VM named 'Web server (prod)' on this host (did you mean 'Web Server
    (prod)'?)`'. The ESXi host is gone; on the KVM box, with the backup volume mounted, the admin types
    `hotvcb restore --latest Web -g hotvcb.conf --kvm /var/lib/libvirt/images` for the VM `web`: 'no good
    backup of 'Web' under …', no hint. The same typo restored to ESXi (`--datastore`) gets '(did you mean
    'web'?)', and so does `restore --repo R --latest Web --kvm DIR`; only the folder volume's KVM restore
    leaves the admin to list the volume by hand at the worst moment.
    Expected: the error names the close VM name, as every other `restore --latest` does."""
    import subprocess
    import sys
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    assert hotvcb(host, "-m", "web", "-g", conf).returncode == 0
    esxi = hotvcb(host, "restore", "--latest", "Web", "-g", conf, "--datastore", "datastore1", "--name", "x", "-d", "1")
    assert "did you mean 'web'" in esxi.stdout + esxi.stderr, esxi.stdout + esxi.stderr
    # the Linux box that restores to KVM, the backup volume mounted at a path of its own
    linux_conf = tmp_path / "kvm.conf"
    linux_conf.write_text("VM_BACKUP_VOLUME=%s\n" % host.real("/vmfs/volumes/backup/hotvcb"))
    (tmp_path / "images").mkdir()
    r = subprocess.run([sys.executable, "-m", "hotvcb", "restore", "--latest", "Web", "-g", str(linux_conf),
                        "--kvm", str(tmp_path / "images"), "-d", "1"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = r.stdout + r.stderr
    assert "Traceback" not in out
    assert r.returncode != 0, out[-1500:]
    assert "did you mean 'web'" in out, out[-1500:]


# -- bare QEMU (--qemu): TCG, QEMU stopped before any guest code (-S), 4 MiB images -------------------------------

@pytest.fixture
def lab(tmp_path):
    with opened(tmp_path, "q33d") as made:
        yield made


def _qemu_dry_and_real(lab, vm, **keys):
    conf = lab.conf(**keys)
    args = ["--qemu", lab.inventory, "backup", "-m", vm, "-g", conf, "-w", lab.workdir]
    drc, dry = lab.hotvcb(*(args + ["-d", "dryrun"]))
    rrc, real = lab.hotvcb(*args)
    assert "Traceback" not in dry + real
    final = [l for l in dry.splitlines() if "Final status:" in l][-1]
    return drc, dry, final, rrc, real


@needs_qemu
def test_a_dry_run_of_a_quiesced_bare_qemu_backup_says_it_will_fail(lab):
    """kvm.md ('Not yet'): '`VM_SNAPSHOT_QUIESCE` with bare QEMU needs the guest agent's `guest-fsfreeze-*`, which
    the QMP driver does not use yet (the snapshot then fails with that reason'; README: 'a dry run that finds
    what the real run would fail on ... exits the code that run would'. The admin moves the ESXi job's config
    (VM_SNAPSHOT_QUIESCE=1, as ghettoVCB.conf had it) to the KVM box and dry-runs `hotvcb --qemu DIR backup -m
    plain -d dryrun`: 'OK, only a dryrun', exit 0, not a word about quiescing. Every real run then fails the
    VM: 'a quiesced snapshot needs the QEMU guest agent, which hotvcb does not use yet; set
    VM_SNAPSHOT_QUIESCE=0 for QEMU VMs', exit 6 - a failure the dry run could only have predicted.
    Expected: the dry run ends with the real run's code (6) and 'ERROR: DRY RUN found problems with …'."""
    lab.start("plain", ["file=%s,format=qcow2,if=virtio" % lab.image("a.qcow2")])
    drc, dry, final, rrc, real = _qemu_dry_and_real(lab, "plain", VM_SNAPSHOT_QUIESCE=1)
    assert rrc == 6 and "quiesced snapshot" in real, (rrc, real[-1500:])
    assert drc == rrc and "DRY RUN found problems" in final, (drc, final)


@needs_qemu
def test_a_dry_run_of_an_in_guest_hook_without_a_guest_agent_says_so(lab):
    """README: 'On both [libvirt and bare QEMU], `GUEST_PRE_BACKUP_HOOK`/`GUEST_POST_BACKUP_HOOK` run inside the
    guest through the QEMU guest agent'; migrating-from-ghettovcb.md step 2 and README's exit codes: the dry
    run is how the admin learns what the real run will fail on. The VM was started without the agent's
    socket (`<DIR>/<VM>.qga`). `-d dryrun` ends 'OK, only a dryrun', exit 0, and names no agent; the real
    run fails the VM: 'in-guest pre-backup hook of plain: QMP …/plain.qga: no guest agent here (… QEMU is not
    listening (No such file or directory)); QEMU gives it this socket with -chardev …', exit 6. The same key
    on ESXi is caught by the dry run (exit 6), and a VM without VMware Tools gets a dry-run warning
    (test_outsider_s28options). Expected: the dry run names the missing agent (or exits 6 as the run does)."""
    lab.start("plain", ["file=%s,format=qcow2,if=virtio" % lab.image("a.qcow2")])
    drc, dry, final, rrc, real = _qemu_dry_and_real(lab, "plain", GUEST_PRE_BACKUP_HOOK="true")
    assert rrc == 6 and "no guest agent" in real, (rrc, real[-1500:])
    assert drc == rrc or "agent" in dry, (drc, dry[-1500:])


@needs_qemu
def test_a_qcow2_image_into_the_repository_fails_with_the_reason(lab, tmp_path):
    """kvm.md ('Not yet'): 'The deduplicating repository ... reads flat disks itself (VMDK extents, `.raw`/`.img`
    images): a qcow2 image fails that disk with the reason'. The KVM admin points VM_BACKUP_REPOSITORY at the
    NAS and backs up a bare-QEMU VM whose disk is qcow2 (QEMU's default). The run fails (exit 6, as
    documented), but the reason reads 'copy of …/e.qcow2 failed: cannot read its descriptor: no createType
    line' - the image was read as a VMDK descriptor - so the admin hunts for a damaged VMDK that does not
    exist instead of learning that qcow2 images cannot go into a repository (use raw, or folder backups).
    Expected: the error names the qcow2 format as what the repository does not read."""
    lab.start("eq", ["file=%s,format=qcow2,if=virtio" % lab.image("e.qcow2")])
    conf = lab.conf(VM_BACKUP_REPOSITORY=str(tmp_path / "repo"))
    rc, out = lab.hotvcb("--qemu", lab.inventory, "backup", "-m", "eq", "-g", conf, "-w", lab.workdir)
    assert "Traceback" not in out
    assert rc == 6, (rc, out[-1500:])
    errors = [l for l in out.splitlines() if "-- error:" in l and "e.qcow2" in l]
    assert errors and "descriptor" not in errors[0] and "qcow2" in errors[0].split("failed:", 1)[-1], errors
