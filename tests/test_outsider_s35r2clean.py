"""Outside tester, session 35 round 2 ("clean"): the last hour's changes, tried as an admin.

Covered: read-only runs (`cleanup -d dryrun`, `backup -d dryrun`) against the real cleanup for another host's
`-partial` folder, with the NFS server's clock behind, ahead and right (UNPROBED_STALE); `schedule remove` /
`show` on boot scripts with CRLF and a single CR-ended line; the ghettoVCB.conf `export NAME...` lines now
passed over, against what /bin/sh assigns; no-break spaces around -f/-e names on a host with `db` and
`db<NBSP>`; esxisim's binary .vmsn (read by the rules of crash's vmware_vmss.c) through a BACKUP_SNAPSHOT_TREE
backup and restore of a VM with umlauts and spaces and a memory snapshot, its second disk on another datastore;
esxisim's removal of a VMFS datastore.

Tried and found sound (no test or a passing one): the dry run says "cannot tell ... `hotvcb cleanup` tells" for
a NAS 10 minutes behind (alive or dead) and the cleanup keeps/removes rightly; `export A B=2`, `export A;B=2`,
`export -n A` are refused with FILE:LINE; -e `db<NBSP>` leaves out only `db<NBSP>`; U+2007/U+202F/U+00A0/BOM
around `db` name `db`; install refuses a CRLF local.sh; the restored .vmsn's cfgFile block keeps its recorded
length and its other-datastore disk line names the restored file; revert of the restored snapshot works.
"""

import os
import subprocess

import pytest

from simhost import hotvcb, needs_root, sealed, snapshot_names, vim, write_conf
from test_schedule_esxi import ARGS, CRONTAB, LOCAL_SH, Esxi, _esxisim, pyz  # noqa: F401  (pyz: a fixture)
from fakelog import Log

ON_ESXISIM = pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")


@pytest.fixture
def esxi(tmp_path, pyz):  # noqa: F811
    host = Esxi(tmp_path / "host", "8.0.2", pyz)
    yield host
    _esxisim("destroy", str(host.path))


# ------------------------------------------------------------------------------------ schedule, CRLF

@ON_ESXISIM
def test_remove_after_local_sh_was_resaved_with_crlf_leaves_nothing_of_ours(esxi):
    """The job was installed; later the admin edited /etc/rc.local.d/local.sh on Windows (CRLF). `schedule show`
    now says the block will not survive and advises converting the file; the admin decides to drop the job
    instead: `hotvcb schedule remove --job hotvcb` says 'removed job(s): hotvcb', exit 0. But only the job's
    block and the restart block's begin marker went: the crond kill/start lines and `# hotvcb-crond end` stay
    in local.sh, no longer recognisable as ours (their begin marker gone), and once the admin converts the file
    as advised they kill and restart crond at every boot. localsh.without_restart compares each line with `==`
    (`_restarts`, the end marker) where the begin marker is found with startswith: a CR at the line's end keeps
    them. Expected: remove takes out everything install wrote, CR or not (or refuses the CRLF file, as install
    does)."""
    esxi.hotvcb("schedule", "install", *ARGS)
    esxi.sh("sed -i 's/$/\\r/' %s" % LOCAL_SH)
    r = esxi.hotvcb("schedule", "remove", "--job", "hotvcb", check=False)
    text = esxi.read(LOCAL_SH)
    assert r.returncode == 0 and not _job_lines(esxi), r.stdout + r.stderr
    assert "hotvcb" not in text and "crond" not in text, text


@ON_ESXISIM
def test_show_on_a_local_sh_with_one_crlf_comment_line(esxi):
    """The job is installed (LF local.sh, block above `exit 0`). A colleague later adds a comment line pasted
    from a Windows editor: that one line ends in CR. `schedule show` now says 'survives a reboot: no
    (/etc/rc.local.d/local.sh is saved with Windows (CRLF) line ends ...)'; the host reboots and the job is back
    in the crontab, as sh skips a comment whatever it ends with. localsh.windows_line_ends calls the whole file
    CRLF if any line ends in CR. Expected: show tells the truth for the blocks sh does run (only lines that are
    not comments, and above all the block's own lines, matter), or at least says which line it means."""
    esxi.hotvcb("schedule", "install", *ARGS)
    esxi.sh("sed -i '2i # edited on a Windows box\\r' %s && /sbin/auto-backup.sh" % LOCAL_SH)
    shown = esxi.hotvcb("schedule", "show").stdout
    (line,) = _job_lines(esxi)
    esxi.reboot()
    assert _job_lines(esxi) == [line]  # the job did survive
    assert "survives a reboot: no" not in shown, shown


def _job_lines(esxi):
    return [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:hotvcb")]


# ------------------------------------------------------------ read-only runs against the real cleanup, NFS skew

def _nas_partial(tmp_path, server_offset, died_ago):
    """Another host's -partial folder on an NFS volume whose server's clock is `server_offset` s off ours; its
    run last stamped the owner file `died_ago` s ago by that server's clock. Returns (shell, volume, folder):
    the shell stamps every file it writes with the server's clock, as the NFS server does."""
    import time
    from hotvcb.localshell import LocalShell
    from hotvcb.runid import RunId
    from hotvcb.store.seal import OWNER

    class NasShell(LocalShell):
        def write_text(self, path, text, **kw):
            super().write_text(path, text, **kw)
            stamp = time.time() + server_offset
            os.utime(path, (stamp, stamp))

    volume = tmp_path / "nfs"
    partial = volume / "web" / "web-2026-01-01_01-00-00-partial"
    partial.mkdir(parents=True)
    (partial / "web-flat.vmdk").write_bytes(b"\0" * 4096)
    owner = partial / OWNER
    owner.write_text(RunId(os.urandom(6).hex(), "esx-a", 4242, int(time.time()) - 3600, "hostA").text() + "\n")
    stamp = time.time() + server_offset - died_ago
    os.utime(str(owner), (stamp, stamp))
    return NasShell(), str(volume), partial


def _judged(tmp_path, server_offset, died_ago):
    """(what the dry run said, what the real cleanup did: 'kept' or 'removed', its log)."""
    from hotvcb.jobs.partials import remove_partials
    from hotvcb.runid import RunId

    shell, volume, partial = _nas_partial(tmp_path, server_offset, died_ago)
    me = RunId.new().on_host("hostB")
    dry = Log()
    remove_partials(shell, volume, "web", dry, me, dry_run=True)
    assert partial.is_dir(), dry.lines
    real = Log()
    remove_partials(shell, volume, "web", real, me)
    return " ".join(dry.lines), "kept" if partial.is_dir() else "removed", real.lines


@pytest.mark.parametrize("offset,died_ago,done", [
    (-600, 0, "kept"),        # NAS 10 min behind, the run alive: no "would remove" (the fix), "cannot tell"
    (-600, 600, "removed"),   # NAS 10 min behind, the run dead 10 min: "cannot tell", then removed
    (+600, 0, "kept"),        # NAS 10 min ahead, the run alive: "cannot tell" (a stamp dated ahead proves nothing)
    (0, 2400, "removed"),     # no skew, dead 40 min: the dry run foresees the removal
])
def test_dry_run_and_cleanup_agree_or_the_dry_run_says_it_cannot_tell(tmp_path, offset, died_ago, done):
    said, did, log = _judged(tmp_path, offset, died_ago)
    assert did == done, (said, log)
    if offset != 0:
        assert "cannot tell" in said and "`hotvcb cleanup` tells" in said and "would remove" not in said, said
    elif did == "kept":
        assert "would remove" not in said and "being written" in said, said
    else:
        assert "would remove" in said, said


def test_dry_run_says_being_written_of_a_folder_the_cleanup_then_removes(tmp_path):
    """Two hosts back up to one NFS share whose server's clock runs 10 minutes ahead of the hosts'. Host A's run
    died 7 minutes ago (server time) leaving web's -partial folder. On host B the admin first runs
    `hotvcb cleanup -d dryrun` (or `backup -d dryrun`): 'web: ...-partial is being written by run=... host=hostA;
    leaving it' -- a definite statement. The real `hotvcb cleanup` then probes the volume's clock and removes it
    as 'left by a run that died'. The fix for the lagging-server direction makes the dry run say it cannot tell;
    for a server ahead the dry run (ageing by this machine's clock, partials.partial_dead with dry_run) reads
    the owner file as touched 3 minutes *in the future*, less than STALE_AFTER ahead, which clockage.heartbeat
    counts as fresh, and calls the run alive. (restore_sweep._heartbeat_fresh ages a restore record the same
    way and should have the same gap.) Expected: where no probe was written the dry run must not claim the folder is being written unless
    its age by this clock proves it (a stamp dated ahead proves nothing): 'cannot tell; `hotvcb cleanup`
    tells', as for the other direction."""
    said, did, log = _judged(tmp_path, +600, 420)
    assert did == "removed", (said, log)
    assert "being written" not in said, said


# ---------------------------------------------------------------------------- ghettoVCB.conf `export` lines

@needs_root
def test_export_of_an_assignment_and_a_name_takes_the_value_sh_assigned(host):
    """The ghettoVCB.conf an admin brings holds `export VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb
    DISK_BACKUP_FORMAT` (assign one, export another: one line of a shell habit). ghettoVCB `source`d it: /bin/sh
    assigned VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb (checked here with sh). hotvcb's new rule passes over
    a line of `export NAME...` alone, but this line is an assignment, read by confsyntax._LINE/_shell_word as a
    'command line with blanks' taken as written: the backups go to a new folder '/vmfs/volumes/backup/hotvcb
    DISK_BACKUP_FORMAT', exit 0, no warning. docs/migrating-from-ghettovcb.md: 'Your files mean what they
    meant to ghettoVCB: a `ghettoVCB.conf` value as its `/bin/sh` read it'. Expected: the value sh assigned, or a refusal/warning naming the line."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="off")
    conf = os.path.join(host.root, "ghettoVCB.conf")
    with open(conf, "w") as f:
        f.write("export VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb DISK_BACKUP_FORMAT\n"
                "DISK_BACKUP_FORMAT=thin\nVM_BACKUP_ROTATION_COUNT=3\n")
    sh = subprocess.run(["sh", "-c", '. "$1"; printf %s "$VM_BACKUP_VOLUME"', "sh", conf],
                        capture_output=True, text=True)
    assert sh.stdout == "/vmfs/volumes/backup/hotvcb", sh
    r = hotvcb(host, "backup", "-g", conf, "-m", "web")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "backups to /vmfs/volumes/backup/hotvcb as thin" in out or "warning" in out.lower(), out


@needs_root
def test_export_lines_sh_reads_otherwise_are_refused_not_passed_over(host):
    """`export NAME...` alone is passed over (sh assigned nothing); lines where sh assigns (`export A B=2`)
    or fails (`export -n A`) are refused with FILE:LINE, never silently dropped."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="off")
    conf = os.path.join(host.root, "ghettoVCB.conf")
    base = "VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\nDISK_BACKUP_FORMAT=thin\n"
    for line, ok in (("export VM_BACKUP_VOLUME DISK_BACKUP_FORMAT  # old habit", True),
                     ("export VM_BACKUP_VOLUME VM_BACKUP_ROTATION_COUNT=1", False),
                     ("export -n VM_BACKUP_VOLUME", False)):
        with open(conf, "w") as f:
            f.write(base + line + "\n")
        r = hotvcb(host, "backup", "-g", conf, "-m", "web", "-d", "dryrun")
        out = r.stdout + r.stderr
        assert "Traceback" not in out, out
        if ok:
            assert r.returncode == 0 and "keep 3" in out, (line, out)
        else:
            assert r.returncode != 0 and "ghettoVCB.conf:3" in out, (line, out)


# ------------------------------------------------------------ binary .vmsn: snapshot tree and memory snapshots

def _checkpoint(data):
    """The groups and tags of a VMware checkpoint file, read by the rules of crash's vmware_vmss.c
    (crash-utility/crash): header (magic, version, groups), 80-byte group entries, tags to a 0 word."""
    import struct
    magic, _version, count = struct.unpack_from("<III", data, 0)
    assert magic == 0xBED2BED2, hex(magic)
    groups = {}
    for i in range(count):
        name, pos, size = struct.unpack_from("<64sQQ", data, 12 + 80 * i)
        tags, at = {}, pos
        while True:
            (tag,) = struct.unpack_from("<H", data, at)
            at += 2
            if tag == 0:
                break
            nlen, nindx, vsize = tag >> 8, (tag >> 6) & 3, tag & 0x3F
            tname = data[at:at + nlen].decode()
            at += nlen + 4 * nindx
            if vsize in (0x3E, 0x3F):
                nbytes, _inmem, pad = struct.unpack_from("<QQH", data, at)
                at += 18 + pad
                tags[tname] = data[at:at + nbytes]
                at += nbytes
            else:
                tags[tname] = data[at:at + vsize]
                at += vsize
        assert at == pos + size, (name, at, pos, size)
        groups[name.rstrip(b"\0").decode()] = tags
    return groups


@needs_root
def test_memory_snapshot_tree_of_an_umlaut_vm_round_trips_with_binary_vmsn(host, tmp_path):
    vm, copy = "Bürø vm 1", "Kopie ü 2"
    vmid = host.create_vm(vm, "datastore1", [{"size": "1M"}, {"size": "1M", "datastore": "ds5"}], power="on")
    out = vim(host, "vmsvc/snapshot.create", vmid, "vor Update", "mit Speicher", "1", "0")
    assert "fault" not in out.lower(), out
    conf = write_conf(host, BACKUP_SNAPSHOT_TREE=1, VM_SNAPSHOT_MEMORY=1)
    r = hotvcb(host, "-m", vm, "-g", conf, "-w", str(tmp_path / "w"))
    assert r.returncode == 0, r.stdout + r.stderr
    [entry] = sealed(host, vm)
    v = hotvcb(host, "verify", "--all", "-g", conf)
    assert v.returncode == 0, v.stdout + v.stderr
    r = hotvcb(host, "restore", "/vmfs/volumes/backup/hotvcb/%s/%s" % (vm, entry), "--datastore", "datastore1",
               "--name", copy)
    assert r.returncode == 0, r.stdout + r.stderr
    restored = host.real("/vmfs/volumes/datastore1/%s" % copy)
    states = [n for n in os.listdir(restored) if n.endswith(".vmsn")]
    assert len(states) == 1, os.listdir(restored)
    with open(os.path.join(restored, states[0]), "rb") as f:
        groups = _checkpoint(f.read())
    cfg = groups["Snapshot"]["cfgFile"].decode("utf-8")
    assert "/vmfs/volumes/ds5" not in cfg and "ds5" not in cfg.split("scsi0:1.fileName", 1)[1].split("\n")[0], cfg
    new = next(k for k in host.state()["vms"] if host.display_name(k) == copy)
    assert snapshot_names(host, new) == ["vor Update"]
    ids = [ln.split(":", 1)[1].strip() for ln in vim(host, "vmsvc/snapshot.get", new).splitlines()
           if "Snapshot Id" in ln]
    out = vim(host, "vmsvc/snapshot.revert", new, ids[0], "0")
    assert "fault" not in out.lower(), out


# ----------------------------------------------------------------------------- no-break spaces in -f / -e

def _vm_named(host, name):
    import esxisim.vmx as vmx
    vmid = host.create_vm("tmp%d" % len(host.state()["vms"]), "datastore1", [{"size": "1M"}], power="off")
    data = vmx.load(host.vmx_real(vmid))
    data["displayName"] = name
    vmx.save(host.vmx_real(vmid), data)
    return vmid


def _list(host, text):
    path = os.path.join(host.root, "vms.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


@needs_root
def test_nbsp_lines_pick_the_exact_vm_first(host):
    """VMs `db` and `db<NBSP>` (a name pasted from a web page): a -e line `db<NBSP>` leaves out `db<NBSP>` only;
    lines with no-break spaces (U+2007, U+202F, U+00A0) around `db` on a host where no VM has that very name
    name `db`."""
    for name in ("db", "db\u00a0"):
        _vm_named(host, name)
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-g", conf, "-d", "dryrun", "-a", "-e", _list(host, "db\u00a0\r\n"))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and out.count("Initiate backup for") == 1 and "Initiate backup for db\n" in out, out
    r = hotvcb(host, "backup", "-g", conf, "-d", "dryrun", "-f", _list(host, "db\u2007\n\u202fdb\u00a0\n"))
    out = r.stdout + r.stderr
    assert r.returncode == 0 and out.count("Initiate backup for") == 1 and "Initiate backup for db\n" in out, out


@needs_root
def test_exclude_line_with_nbsp_and_a_trailing_space_leaves_out_the_vm_it_names(host):
    """The host has VMs `db` and `db<NBSP>` (the second's name pasted from a web page, NBSP and all). The
    admin's exclude list, pasted the same way, holds `db<NBSP>` followed by an editor's trailing space. Before
    today's change a trailing space was a blank and the NBSP was not: the line named `db<NBSP>`, which was left
    out. Now both are blanks and, as no VM is called `db<NBSP><space>`, the line names `db`: `-a -e` backs up
    `db<NBSP>` and leaves `db` out, without a word (the dry run says OK). Where a line with only some of its
    blanks dropped names another VM than with all dropped, the line is ambiguous: it should name the VM the
    fewest dropped blanks give (`db<NBSP>`) or at least warn that it could name either."""
    for name in ("db", "db\u00a0"):
        _vm_named(host, name)
    r = hotvcb(host, "backup", "-g", write_conf(host), "-d", "dryrun", "-a", "-e", _list(host, "db\u00a0 \n"))
    out = r.stdout + r.stderr
    assert "Initiate backup for db\n" in out or "warn" in out.lower(), out



# ----------------------------------------------------------------------- esxisim: a removed VMFS datastore

def _host_sh(host, script):
    import sys
    from simhost import REPO
    return subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--", "/bin/sh", "-c", script],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)


@needs_root
def test_esxisim_removing_a_vmfs_datastore_in_use_is_refused(host):
    """esxisim's change ('a removed VMFS datastore takes its folder along') made two unfaithful paths destroy
    data. (1) `esxcli storage nfs remove -v ds5` naming a VMFS datastore: on ESXi that command removes a NAS
    volume only (esxcli reference: 'storage nfs remove -- Remove an existing NAS volume from the ESX host'), a
    VMFS name is no NFS volume and is an error; esxisim answers exit 0 and rmtree's the VMFS volume, the
    registered VM's files with it (esxcli.py calls host.remove_datastore for any type). (2) `vim-cmd
    hostsvc/datastore/destroy datastore1` with a VM registered there: RemoveDatastore throws ResourceInUse
    (vSphere API, vim.fault.ResourceInUse 'Thrown by ... RemoveDatastore'; the vAPI's ResourceInUse example:
    'Trying to remove a VMFS datastore when there is a virtual machine registered on any host attached to the
    datastore'); esxisim destroys it. A hotvcb test that unmounts by the wrong name would pass on esxisim where
    ESXi would have refused. Expected: both refused, the files kept."""
    host.create_vm("keep me", "ds5", [{"size": "1M"}], power="off")
    host.create_vm("keep too", "datastore1", [{"size": "1M"}], power="off")
    files = "ls '/vmfs/volumes/ds5/keep me/keep me.vmx' '/vmfs/volumes/datastore1/keep too/keep too.vmx'"
    assert _host_sh(host, files).returncode == 0
    nfs = _host_sh(host, "esxcli storage nfs remove -v ds5; echo rc=$?")
    destroy = _host_sh(host, "vim-cmd hostsvc/datastore/destroy datastore1; echo rc=$?")
    left = _host_sh(host, files)
    assert left.returncode == 0, (nfs.stdout, destroy.stdout, left.stderr)
    # vim-cmd prints hostd's fault and exits 0 (esxisim/faults.py, FAULT_EXIT): refused by its fault block
    assert "rc=0" not in nfs.stdout and "(vim.fault.ResourceInUse)" in destroy.stdout, (nfs.stdout, destroy.stdout)


@needs_root
def test_cleanup_dry_run_summary_counts_the_partial_it_cannot_tell_about(host):
    """Another host's run died 10 minutes ago leaving web's -partial folder on the shared backup volume (its
    owner file untouched since). The admin previews: `hotvcb cleanup -d dryrun` says, per folder, 'cannot tell
    whether its run died ...; `hotvcb cleanup` tells' (the new wording, right) and then, as its summary,
    'cleanup: 0 leftover(s) found', exit 0. `hotvcb cleanup` then says '1 leftover(s) removed'. The summary, the
    line a wrapper script or a glance reads, says there is nothing, where there is a leftover the dry run could
    not judge. Expected: the summary names it ('0 found, 1 undecided: run `hotvcb cleanup`', or counts it as
    a possible leftover), so the dry run's last word matches what the cleanup is about to do."""
    import time
    from hotvcb.runid import RunId
    from hotvcb.store.seal import OWNER
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="off")
    conf = write_conf(host)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(time.time() - 900))
    partial = os.path.join(host.real("/vmfs/volumes/backup"), "hotvcb", "web", "web-%s-partial" % stamp)
    os.makedirs(partial)
    with open(os.path.join(partial, "web-flat.vmdk"), "wb") as f:
        f.write(b"\0" * 4096)
    owner = os.path.join(partial, OWNER)
    with open(owner, "w") as f:
        f.write(RunId(os.urandom(6).hex(), "esx-a", 4242, int(time.time()) - 900, "f" * 32).text() + "\n")
    old = time.time() - 600
    os.utime(owner, (old, old))
    dry = hotvcb(host, "cleanup", "-g", conf, "-d", "dryrun")
    assert dry.returncode == 0 and "cannot tell whether its run died" in dry.stdout and os.path.isdir(partial), \
        dry.stdout + dry.stderr
    real = hotvcb(host, "cleanup", "-g", conf)
    assert "1 leftover(s) removed" in real.stdout and not os.path.exists(partial), real.stdout + real.stderr
    assert "0 leftover(s) found" not in dry.stdout, dry.stdout
