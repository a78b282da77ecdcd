"""Outside test, stop 28 round 2 (admin): the admin-facing changes of the day, tried to break.

BACKUP_FILES_CHMOD's symbolic modes compared with what chmod(1) (GNU coreutils and busybox, ESXi's) does
to a file here, the per-VM volume marker, the NFS mount marker, and the new refusals. Each defect is a
strict xfail until fixed. Tiny disks; one simulated host per test.
"""

import os
import subprocess

import pytest

from hotvcb.filemode import FileMode
from simhost import hotvcb, needs_root, write_conf


def _chmod(tmp_path, mode: str, start: int) -> int:
    """What chmod(1) itself makes of `mode` on a file of mode `start`, under umask 022."""
    f = tmp_path / "probe"
    f.write_text("")
    os.chmod(f, start)
    subprocess.run(["sh", "-c", 'umask 022 && chmod -- "$0" "$1"', mode, str(f)], check=True)
    return os.stat(f).st_mode & 0o7777


# -- 1. a symbolic '=' without u/g/o/a keeps group and others' write --------------------------------------------

@pytest.mark.parametrize("mode", ["=rw", "=r", "=rwX"])
def test_a_mode_set_with_equals_and_no_class_leaves_no_group_or_other_write(tmp_path, mode):
    """The admin's ghettoVCB.conf has `BACKUP_FILES_CHMOD==rw` ("files are rw for the owner, read for the
    rest", as `chmod -R =rw` gave under ESXi's umask 022: 0644, and busybox chmod the same). filemode.py
    promises a clause without u/g/o/a "acts as chmod does under umask 022". But a who-less `=` only
    replaces the bits outside the umask: a file that was 0664 (group-writable) stays 0664 where chmod
    makes it 0644, so group members keep write on a backup the admin meant to lock down (and `=` alone
    leaves 0020 where chmod leaves 0000). It should clear every bit, then set the wanted ones minus the
    umask, as POSIX chmod does."""
    for start in (0o664, 0o666, 0o622):
        want = _chmod(tmp_path, mode, start)
        assert FileMode(mode).apply(start, False) == want, (mode, oct(start), oct(want))


# -- 2. an octal mode chmod takes is refused ----------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("mode, want", [("00640", 0o640), ("000600", 0o600)])
def test_an_octal_mode_with_more_leading_zeros_is_taken_as_chmod_takes_it(host, mode, want):
    """The admin's ghettoVCB.conf says `BACKUP_FILES_CHMOD=00640`; ghettoVCB ran `chmod -R 00640` on each
    backup (busybox and GNU chmod both take it: 0640) and config-reference.md says the key takes an octal
    mode "as chmod takes it". hotvcb refuses the config, exit 1, and no VM is backed up that night. It
    should take the mode as chmod does (files 0640)."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, BACKUP_FILES_CHMOD=mode)
    r = hotvcb(host, "-m", "db", "-g", conf)
    assert r.returncode == 0, r.stdout + r.stderr
    root = host.real("/vmfs/volumes/backup/hotvcb/db")
    folder = os.path.join(root, [e for e in os.listdir(root) if e.startswith("db-")][0])
    for name in os.listdir(folder):
        assert os.stat(os.path.join(folder, name)).st_mode & 0o7777 == want, name


# -- 3. status -c / list -c ignore a per-VM file's repository ------------------------------------------------------

@needs_root
def test_status_and_list_with_c_find_the_backups_a_per_vm_file_sent_to_a_repository(host, tmp_path):
    """The admin sends the big database VM into the deduplicating repository with a per-VM file
    (`<DIR>/db`: VM_BACKUP_REPOSITORY=/vmfs/volumes/ds5/repo; config-reference.md refuses only run-wide keys
    there), and the nightly `hotvcb -a -g conf -c DIR` backs it up, exit 0. The monitoring runs, as
    operations.md says, `hotvcb status -g conf -c DIR`: "CRIT backup db: never backed up" (exit 2) every
    night, though it counts the repository's datastore as db's backup target; `hotvcb list db -g conf -c DIR`
    says there are no backups of db under the global volume. Both should find db's backup in the
    repository its per-VM file names (or at least not call a VM with a good backup never backed up)."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    os.makedirs(host.real("/vmfs/volumes/ds5/repo"))
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "db").write_text("VM_BACKUP_REPOSITORY=/vmfs/volumes/ds5/repo\n")
    conf = write_conf(host)
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir)
    assert r.returncode == 0 and "/vmfs/volumes/ds5/repo" in r.stdout, r.stdout + r.stderr
    status = hotvcb(host, "status", "-g", conf, "-c", confdir)
    listed = hotvcb(host, "list", "db", "-g", conf, "-c", confdir)
    assert status.returncode == 0 and "never backed up" not in status.stdout, status.stdout + status.stderr
    assert listed.returncode == 0 and "no backups" not in listed.stdout + listed.stderr, listed.stdout + listed.stderr


# -- 4. status calls a VM whose backup volume is not mounted "never backed up" -----------------------------------

@needs_root
@pytest.mark.parametrize("where", ["per-vm", "global"])
def test_status_says_the_backup_volume_is_not_mounted_rather_than_never_backed_up(host, tmp_path, where):
    """db is backed up every night to a NAS (an NFS datastore `nas` the admin mounted on the host), named
    by its per-VM file's VM_BACKUP_VOLUME (read by `status -c DIR`) or by the global one. One morning the
    NAS datastore is gone from the host (a NAS reboot, an APD). `hotvcb status` says "CRIT backup db: never
    backed up", no line names the volume or its missing datastore (the backup itself says "... is not on a
    datastore of this host"), and the datastore checks are all OK: the admin on call goes looking for why
    db's backup was never set up. The check should say db's backup volume is not there, naming it, as
    status does for the unmounted NFS share of ENABLE_NON_PERSISTENT_NFS."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    host.add_nfs("nas", "10.0.0.5", "/export/backups", capacity=1 << 30)
    volume = "/vmfs/volumes/nas/hotvcb"
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    if where == "per-vm":
        (confdir / "db").write_text("VM_BACKUP_VOLUME=%s\n" % volume)
        conf = write_conf(host)
    else:
        conf = write_conf(host, VM_BACKUP_VOLUME=volume)
    r = hotvcb(host, "-m", "db", "-g", conf, "-c", confdir)
    assert r.returncode == 0, r.stdout + r.stderr
    host.remove_datastore("nas")
    r = hotvcb(host, "status", "-g", conf, "-c", confdir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "never backed up" not in r.stdout and volume in r.stdout, r.stdout + r.stderr


# -- 5. a debug log WORKDIR_DEBUG keeps that cannot be written: exit 0 -------------------------------------------

@needs_root
def test_a_debug_log_that_cannot_be_written_is_not_an_all_ok_run(host, tmp_path):
    """The admin sets WORKDIR_DEBUG=1 to keep tonight's debug log for a support case and runs
    `hotvcb -m db -g conf -w /var/tmp/hotvcb-debug`, where that path is, by mistake, a file. README: the log
    is stdout, `-l FILE` "and the work directory's debug.log"; a sink that cannot take a line makes the final
    status end in "WARNING: the log could not be written to ..." and an otherwise OK run exit 9, and `-l`
    naming something unusable is refused before the run (exit 1). Here the run only warns mid-log "cannot
    use work directory", ends "All VMs backed up OK!" and exits 0: the cron wrapper sees success and the
    debug log the admin needs does not exist. Expected: exit 9 (or a refusal, exit 1) with the final status
    naming the debug log that could not be written."""
    host.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host, WORKDIR_DEBUG="1")
    work = tmp_path / "hotvcb-debug"
    work.write_text("not a folder\n")
    r = hotvcb(host, "-m", "db", "-g", conf, "-w", work)
    assert r.returncode in (1, 9), r.stdout + r.stderr
    assert "Final status: All VMs backed up OK!" not in r.stdout, r.stdout  # its warning comes first (exit 9)


# -- 6. the per-VM volume marker fails the backup of a VM whose folder cannot be written -------------------------

@needs_root
def test_a_vm_folder_that_cannot_be_written_does_not_fail_a_backup_to_a_per_vm_volume(host, tmp_path):
    """The admin backs up a powered-off template VM that lives on a read-only datastore (an NFS export mounted
    read-only, `esxcli storage nfs add -r`; here the folder is made immutable, which the host's writes meet
    alike). `hotvcb -m tpl -g conf` backs it up fine: a powered-off VM's backup writes nothing in its folder.
    Since today, a per-VM file sending it to its own volume (`-c DIR`, VM_BACKUP_VOLUME=...) makes hotvcb
    write `.hotvcb-backup-volume.tpl.vmx` into the VM's folder first, and when the host refuses it the VM's
    backup fails ("cannot write ...: Operation not permitted", exit 6) before a byte is copied. The marker
    only helps `hotvcb cleanup` after a killed run (operations.md); the backup should go on without it,
    warning that a killed run's leftovers there would not be found by cleanup."""
    host.create_vm("tpl", "datastore1", [{"size": "1M"}], power="off")
    folder = host.real("/vmfs/volumes/datastore1/tpl")
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "tpl").write_text("VM_BACKUP_VOLUME=/vmfs/volumes/ds5/templates\n")
    conf = write_conf(host)
    if subprocess.run(["chattr", "+i", folder], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        plain = hotvcb(host, "-m", "tpl", "-g", conf)
        assert plain.returncode == 0, plain.stdout + plain.stderr  # without -c: fine
        r = hotvcb(host, "-m", "tpl", "-g", conf, "-c", confdir)
    finally:
        subprocess.run(["chattr", "-i", folder], check=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.listdir(host.real("/vmfs/volumes/ds5/templates/tpl")), r.stdout
