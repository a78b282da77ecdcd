"""Issue 4 through the backup CLI: NFS target mounted for the run, two hosts on one
share, and the e-mail an admin gets."""

import json
import os
import time

from simhost import (Host, hotvcb, hotvcb_background, make_host, needs_root, snapshot_names, wrap_tool, write_conf)

pytestmark = needs_root


def nfs_conf(host, **keys):
    values = dict(VM_BACKUP_VOLUME="/vmfs/volumes/unused", ENABLE_NON_PERSISTENT_NFS=1, UNMOUNT_NFS=1,
                  NFS_SERVER="10.0.0.5", NFS_MOUNT="/export/backups", NFS_LOCAL_NAME="nfs_backup",
                  NFS_VM_BACKUP_DIR="hotvcb", NFS_VERSION="nfs")
    values.update(keys)
    return write_conf(host, **values)


def datastore_names(host):
    return set(host.datastores())


def test_two_hosts_share_an_nfs_target_without_clobbering(tmp_path):
    share = tmp_path / "nfs"
    hosts = []
    for name in ("esxi01", "esxi02"):
        h = Host.create(str(tmp_path / name), version="7.0.3", hostname=name, nfs_root=str(share), crond=False)
        h.add_datastore("datastore1", 1 << 30, vmfs=6)
        h.create_vm("app", "datastore1", [{"size": "8M"}], power="on")
        h.set_fault("clone.delay", "3")
        hosts.append(h)
    try:
        runs = [hotvcb_background(h, "-m", "app", "-g", nfs_conf(h), "-w", tmp_path / ("w-" + h.root[-6:]))
                for h in hosts]
        outs = [p.communicate(timeout=120)[0] for p in runs]
        for p, out in zip(runs, outs):
            assert p.returncode == 0, "\n=====\n".join(outs)
            assert "Mounting NFS 10.0.0.5:/export/backups as datastore nfs_backup" in out
            # the CONFIG line names where the backups go, not the VM_BACKUP_VOLUME the NFS keys override
            assert "backups to /vmfs/volumes/nfs_backup/hotvcb (NFS 10.0.0.5:/export/backups) as" in out
            assert "Unmounting NFS datastore nfs_backup" in out
        folder = share / "10.0.0.5" / "export" / "backups" / "hotvcb" / "app"
        entries = sorted(os.listdir(folder))
        assert len(entries) == 2, entries
        assert all((folder / e / "STATUS.ok").exists() for e in entries)
        for h in hosts:
            assert "nfs_backup" not in datastore_names(h), "UNMOUNT_NFS=1 unmounts what we mounted"
            assert snapshot_names(h, h.vmid_by_name("app")) == []
    finally:
        for h in hosts:
            h.stop()


def test_nfs_mount_failure_is_one_clear_error_and_nothing_is_snapshotted(tmp_path):
    host = make_host(tmp_path / "host")
    try:
        vmid = host.create_vm("app", "datastore1", [{"size": "4M"}], power="on")
        host.set_fault("nfs.mount", "fail")  # nas_create fails as with an unreachable server
        conf = nfs_conf(host)
        r = hotvcb(host, "-m", "app", "-g", conf, "-w", tmp_path / "w")
        out = r.stdout + r.stderr
        assert r.returncode == 1, out  # README: 1 = the run could not start
        assert "cannot mount NFS 10.0.0.5:/export/backups as nfs_backup: " in out
        assert "Unable to connect to NFS server" in out
        assert "Final status: ERROR: cannot mount NFS" in out
        assert "Initiate backup" not in out and "Unmounting" not in out  # nothing started, nothing to undo
        assert "nfs_backup" not in datastore_names(host)
        # nothing was written where the share should have been mounted, nor on the share
        assert not os.path.lexists(host.real("/vmfs/volumes/nfs_backup"))
        assert not os.path.exists(os.path.join(host.state()["nfs_root"], "10.0.0.5", "export", "backups", "hotvcb"))
        assert snapshot_names(host, vmid) == [] and host.power_state(vmid) == "on"
        # the work lock was released: once the server is back the same run goes through and unmounts
        host.clear_faults()
        r = hotvcb(host, "-m", "app", "-g", conf, "-w", tmp_path / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Unmounting NFS datastore nfs_backup" in r.stdout
        assert "nfs_backup" not in datastore_names(host)
    finally:
        host.stop()


def test_nfs_target_is_unmounted_after_a_failed_backup(tmp_path):
    host = make_host(tmp_path / "host")
    try:
        vmid = host.create_vm("app", "datastore1", [{"size": "4M"}], power="on")
        host.set_fault("clone.fail_at", "40")
        r = hotvcb(host, "-m", "app", "-g", nfs_conf(host), "-w", tmp_path / "w")
        assert r.returncode == 6, r.stdout + r.stderr  # README: 6 = all failed
        assert "Mounting NFS 10.0.0.5:/export/backups as datastore nfs_backup" in r.stdout
        assert "Unmounting NFS datastore nfs_backup" in r.stdout
        assert "nfs_backup" not in datastore_names(host)
        folder = os.path.join(host.state()["nfs_root"], "10.0.0.5", "export", "backups", "hotvcb", "app")
        [failed] = [f for f in os.listdir(folder) if not f.startswith(".")]  # the failed copy's disk data was dropped, the reason kept; a dotfile records the run
        files = os.listdir(os.path.join(folder, failed))
        assert "STATUS.error" in files and "hotvcb.json" in files
        assert not [f for f in files if f.endswith(".vmdk")], files
        assert snapshot_names(host, vmid) == []
        # status reads the backups where the run wrote them and never mounts: it says why it sees none
        unmounted = ("the NFS share 10.0.0.5:/export/backups (datastore nfs_backup) is not mounted; mount it or run a "
                     "backup (UNMOUNT_NFS=1 unmounts it as each run ends)")
        r = hotvcb(host, "status", "-g", nfs_conf(host), "--json")
        [why] = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "nfs_backup (backup target)"]
        assert why["severity"] == "WARN" and why["message"] == unmounted, why
        r = hotvcb(host, "restore", "--latest", "app", "--datastore", "datastore1", "-g", nfs_conf(host))
        assert r.returncode == 1 and "/vmfs/volumes/nfs_backup/hotvcb; %s" % unmounted in r.stderr, r.stderr
    finally:
        host.stop()


def test_nfs_share_someone_else_mounted_is_used_and_left_mounted(tmp_path):
    """The share, mounted under NFS_LOCAL_NAME by the admin (not by hotvcb): used, never unmounted; the
    same name taken by a VMFS datastore or another share is refused (test_outsider_s28options.py)."""
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("app", "datastore1", [{"size": "4M"}], power="on")
        host.add_nfs("nfs_backup", "10.0.0.5", "/export/backups/", 8 << 30)  # a trailing / is the same export
        r = hotvcb(host, "-m", "app", "-g", nfs_conf(host), "-w", tmp_path / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "already mounted; using it and leaving it mounted" in r.stdout
        assert "Unmounting" not in r.stdout
        assert "nfs_backup" in datastore_names(host)
        assert os.listdir(host.real("/vmfs/volumes/nfs_backup/hotvcb/app"))
    finally:
        host.stop()


def test_a_refused_unmount_is_tried_again_by_the_next_run(tmp_path):
    """UNMOUNT_NFS=1 and hostd refuses the unmount: the run says so in its final status (exit 9), and the
    next run, which finds the share still mounted, knows it is ours and unmounts it."""
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("app", "datastore1", [{"size": "4M"}], power="on")
        conf = nfs_conf(host)
        wrap_tool(host, "vim-cmd", 'case "$1" in hostsvc/datastore/destroy) printf "(vim.fault.ResourceInUse) {\\n'
                  '   msg = \\"The resource nfs_backup is in use.\\"\\n}\\n"; exit 0;; esac')
        r = hotvcb(host, "-m", "app", "-g", conf, "-w", tmp_path / "w")
        assert r.returncode == 9, r.stdout + r.stderr
        assert "Final status: WARNING: NFS datastore nfs_backup is still mounted (UNMOUNT_NFS=1): " in r.stdout
        assert "; All VMs backed up OK!" in r.stdout
        tool = host.store.p("root", "usr_bin", "upper", "vim-cmd")
        os.replace(tool + ".real", tool)  # hostd lets go of the datastore
        r = hotvcb(host, "-m", "app", "-g", conf, "-w", tmp_path / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "NFS datastore nfs_backup was mounted by " in r.stdout and "unmounting it as this run ends" in r.stdout
        assert "nfs_backup" not in datastore_names(host)
    finally:
        host.stop()


def test_mail_report_reaches_the_admin_with_status_in_subject(tmp_path):
    # imported here: without aiosmtpd only this test is skipped, not the NFS ones above
    from smtpserver import smtp_server
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("Mail Server (prod)", "datastore1", [{"size": "4M"}], power="on")
        with smtp_server() as server:
            conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                              EMAIL_TLS="none", EMAIL_TO="admin@example.com", EMAIL_ERRORS_TO="oncall@example.com",
                              EMAIL_FROM="hotvcb@esxi01.example.com")
            r = hotvcb(host, "-m", "Mail Server (prod)", "-m", "Gone VM", "-g", conf, "-w", tmp_path / "w",
                       "-j", "nightly")
            assert r.returncode == 4, r.stdout + r.stderr
            deadline = time.monotonic() + 10
            while not server.messages and time.monotonic() < deadline:
                time.sleep(0.1)
        [mail] = server.messages
        assert sorted(mail.rcpt_tos) == ["admin@example.com", "oncall@example.com"]
        subject = mail.message["Subject"]
        assert "nightly" in subject and "ERROR: Only some of the VMs backed up!" in subject
        body = mail.message.get_body(preferencelist=("plain",)).get_content()
        assert "OK      Mail Server (prod)" in body and "ERROR   Gone VM" in body
        assert "no VM named 'Gone VM'" in body
        assert "good backups: 1, newest /vmfs/volumes/backup/hotvcb/Mail Server (prod)/Mail Server (prod)-" in body
        assert "-- info: Initiate backup for Mail Server (prod)" in body  # the full log follows
    finally:
        host.stop()


def test_unreachable_mail_server_never_fails_the_backup(tmp_path):
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("vm", "datastore1", [{"size": "4M"}], power="on")
        conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=1, EMAIL_TLS="none",
                          EMAIL_TO="admin@example.com")
        r = hotvcb(host, "-m", "vm", "-g", conf, "-w", tmp_path / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "warning" in r.stdout and "mail" in r.stdout.lower()
    finally:
        host.stop()


def test_nfs41_is_mounted_with_the_version_word_vim_cmd_takes(tmp_path):
    """NFS_VERSION=nfs41 (ghettoVCB's word) reaches nas_create as `nfsv41`, the only 4.1 word
    vim-cmd accepts (sample vimcmd-usage-texts); esxisim refuses any other."""
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("app", "datastore1", [{"size": "4M"}])
        r = hotvcb(host, "-m", "app", "-g", nfs_conf(host, UNMOUNT_NFS=0, NFS_VERSION="nfs41"), "-w", tmp_path / "w")
        assert r.returncode == 0, r.stdout + r.stderr
        assert host.datastores()["nfs_backup"].get("nfs_version") == "nfsv41"
    finally:
        host.stop()
