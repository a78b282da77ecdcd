"""Outside tester, session 34: real-world shapes and scale on a simulated ESXi host, folder mode, as a
ghettoVCB user switching over has them: a VM of many disks on several datastores (one in another VM's
folder, one in a subfolder, 2gbsparse, SATA/NVMe, independent, virtual RDM) under a chain of user
snapshots; a night of many VMs failing in different ways (the final status, the exit code, the per-VM
table, the JSON report and the mail must each say what happened to each VM); power-down mode with a VM
the host will not power off; names that differ only by a trailing blank. Each defect is a strict xfail
until fixed; the rest pin what an admin relies on. Tiny (1-2 MiB) disks.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

import esxisim.vmx as vmx
from esxisim import snapshots
from simhost import VOLUME, backup_root, hotvcb, needs_root, power, sealed, snapshot_names, write_conf

pytestmark = needs_root

smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail tests")


def _final_status(text):
    lines = [ln for ln in text.splitlines() if "###### Final status: " in ln]
    assert lines, text[-2000:]
    return lines[-1].split("###### Final status: ", 1)[1].rsplit(" ######", 1)[0]


def _named(host, folder, name, specs=None, power_state="on", **kw):
    vmid = host.create_vm(folder, "datastore1", specs or [{"size": "1M"}], power=power_state, **kw)
    data = host.load_vmx(vmid)
    data["displayName"] = name
    vmx.save(host.vmx_real(vmid), data)
    return vmid


def _plain(mail):
    for part in mail.message.walk():
        if part.get_content_type() == "text/plain":
            return part.get_content()
    return ""


# ---------------------------------------------------------------------------------------------- defects

def test_json_report_says_why_a_vm_with_a_skipped_disk_warns(host, tmp_path):
    """The admin's monitoring reads `--json-report` after the nightly `-a` run. Two VMs carry a disk no
    snapshot can copy: an independent-persistent data disk and a physical RDM. The run rightly warns (exit
    3, `WARN 1/2` in the table, the mail saying `scsi0:1 is in no backup: independent disk ...`) - but the
    JSON rows of both VMs say `"result": "warn", "message": ""`, so the monitoring ticket reads 'warning:'
    with nothing after it. operations.md promises: 'a VM that warns without a failed disk ... has the warning
    as its row's `message`'. The row must carry the same reason the mail gives."""
    host.create_vm("files", "datastore1", [{"size": "1M"}, {"size": "1M", "mode": "independent-persistent"}],
                   power="on")
    host.create_vm("sql", "datastore1", [{"size": "1M"}, {"size": "1M", "rdm": "physical"}], power="on")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-a", "-g", write_conf(host), "--json-report", report)
    assert r.returncode == 3, r.stdout[-2000:]
    rows = {v["vm"]: v for v in json.loads(report.read_text())["vms"]}
    assert rows["files"]["result"] == "warn" and rows["sql"]["result"] == "warn", rows
    assert "independent" in rows["files"]["message"], rows["files"]
    assert "RDM" in rows["sql"]["message"] or "rdm" in rows["sql"]["message"].lower(), rows["sql"]


def test_a_list_line_naming_the_vm_with_the_trailing_blank_does_not_silently_back_up_its_twin(host, tmp_path):
    """The host has two VMs, `db` and `db ` (a trailing blank typed in the vSphere client years ago: the
    old and the new database server). The admin's `vms_to_backup` names `db ` - the one that matters - on
    its own line. hotvcb strips the blank, backs up `db` instead, and ends `All VMs backed up OK!` (exit
    0): VM `db ` has no backup and nothing in the log, the table, the report or the mail says so.
    (namelist.py strips blanks on purpose, 'a list entry that silently matches no VM means a VM that
    silently is not backed up' - here it is exactly that.) The run must back up `db ` or at least name it:
    the line was read as 'db' while a VM 'db ' exists (use -m)."""
    _named(host, "old", "db")
    _named(host, "new", "db ")
    lst = tmp_path / "vms_to_backup"
    lst.write_text("db \n", encoding="utf-8")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-f", lst, "-g", write_conf(host), "--json-report", report)
    out = r.stdout + r.stderr
    backed = [v["vm"] for v in json.loads(report.read_text())["vms"] if v["result"] == "ok"]
    assert "db " in backed or ("'db '" in out and r.returncode != 0), (r.returncode, backed, out[-2500:])


def test_an_exclude_line_naming_the_vm_with_the_trailing_blank_does_not_leave_out_its_twin(host, tmp_path):
    """Same host, VMs `db` and `db `. The admin's exclude list (-e) names `db ` (the scratch copy, 400 GB, not
    worth a backup); the nightly job is `-a -e exclude`. hotvcb strips the blank: `db` - the production
    database - is left out every night, `db ` is backed up, and the run ends `All VMs backed up OK!`.
    Nothing says the line was read as another VM's name. The run must leave out `db ` and back up `db`, or
    at least warn that the line was read as 'db' while a VM 'db ' exists."""
    _named(host, "old", "db")
    _named(host, "new", "db ")
    ex = tmp_path / "exclude"
    ex.write_text("db \n", encoding="utf-8")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-a", "-e", ex, "-g", write_conf(host), "--json-report", report)
    out = r.stdout + r.stderr
    backed = [v["vm"] for v in json.loads(report.read_text())["vms"] if v["result"] == "ok"]
    assert backed == ["db"] or "'db '" in out, (r.returncode, backed, out[-2500:])


def test_the_run_table_tells_apart_two_vms_that_differ_by_a_trailing_blank(host, tmp_path):
    """VMs `db` and `db ` are both backed up by `-a`; the copy of `db `'s disk fails. The table at the end of
    the log and in the mail reads `db  OK` and `db  ERROR`: the blank is lost in the column padding, and the
    admin restarts the wrong VM's backup (status shows them apart as 'db:' and 'db :'). Each row must name
    its VM so the two can be told apart (quoted, or the blank shown)."""
    _named(host, "old", "db")
    _named(host, "new", "db ")
    host.set_fault("clone.match", "/new/")
    host.set_fault("clone.fail_at", 50)
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, **smtpserver.mail_keys(server))
        r = hotvcb(host, "-a", "-g", conf)
        [mail] = smtpserver.wait_mail(server)
    assert r.returncode == 4, r.stdout[-2000:]

    def rows(lines):
        start = [i for i, ln in enumerate(lines) if "RESULT" in ln and "DISKS" in ln][-1]
        return [ln for ln in lines[start + 1:] if " OK " in ln or " ERROR " in ln]

    log_rows = [ln.split(" -- info: ", 1)[1] for ln in rows(r.stdout.splitlines())]
    mail_rows = rows(_plain(mail).split("---- full log ----")[0].splitlines())
    for table in (log_rows, mail_rows):
        assert len(table) == 2, table
        names = [row.split(" OK ")[0].split(" ERROR ")[0].rstrip() for row in table]
        assert names[0] != names[1], table


def test_a_refused_hard_power_off_is_the_reason_the_report_gives(host, tmp_path):
    """POWER_VM_DOWN_BEFORE_BACKUP=1 and ENABLE_HARD_POWER_OFF=1, as the admin's ghettoVCB.conf had them.
    The guest ignores the shutdown and the host refuses the hard power off too (`Power off failed`). The VM
    is rightly not backed up and left running - but the mail's VM line and the JSON row give as the reason
    only 'timed out after ... waiting for app to power off', which reads as if the hard power off was never
    tried (the admin goes looking at ITER_TO_WAIT_SHUTDOWN). The reason in the report must be the host's
    refusal of the power off."""
    host.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    report = tmp_path / "report.json"
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, **smtpserver.mail_keys(server, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1,
                                             ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s"))
        host.set_fault("power.shutdown", "ignore")
        host.set_fault("power.off", "refuse")
        r = hotvcb(host, "-m", "app", "-g", conf, "--json-report", report)
        [mail] = smtpserver.wait_mail(server)
    assert r.returncode == 6, r.stdout[-2000:]
    assert power(host, host.vmid_by_name("app")) == "Powered on"
    assert "Power off failed" in r.stdout or "hard power off failed" in r.stdout, r.stdout[-2000:]  # logged
    [row] = json.loads(report.read_text())["vms"]
    assert "power off failed" in row["message"].lower(), row
    summary = _plain(mail).split("---- full log ----")[0]
    assert "power off failed" in summary.lower(), summary


def _no_tools_run(host, tmp_path):
    """POWER_VM_DOWN_BEFORE_BACKUP=1 without hard power off, VM `legacy` without VMware Tools: (run, report row)."""
    host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "legacy", "-g", conf, "--json-report", report)
    assert r.returncode == 6, r.stdout[-2000:]
    assert power(host, host.vmid_by_name("legacy")) == "Powered on"
    [row] = json.loads(report.read_text())["vms"]
    return conf, r, row


def test_a_vm_without_tools_in_power_down_mode_is_reported_for_what_it_is(host, tmp_path):
    """ghettoVCB.conf has POWER_VM_DOWN_BEFORE_BACKUP=1 (no hard power off). An old appliance has no VMware
    Tools: `vim-cmd vmsvc/power.shutdown` answers at once 'VMware Tools is not running'. hotvcb logs that as a
    warning, then waits the whole POWER_DOWN_TIMEOUT (5 minutes by default, per such VM, every night), logs
    'its guest was asked to shut down and may still go off' - it was not: the request failed - and the mail
    and JSON report give as the reason 'timed out after ... waiting for legacy to power off'. The admin
    looks for a slow guest. The VM's reason must be that VMware Tools is not running (the guest cannot be
    shut down), and no false 'may still go off' line."""
    _conf, r, row = _no_tools_run(host, tmp_path)
    assert "tools" in row["message"].lower(), row
    assert "may still go off" not in r.stdout, r.stdout[-2000:]


def test_cleanup_does_not_power_on_a_vm_whose_shutdown_request_failed(host, tmp_path):
    """The night's run could not shut `legacy` down (no VMware Tools: the request failed at once) and left it
    running. In the morning the admin powers it off by hand to install Tools, and runs `hotvcb cleanup` for
    the leftovers the mail mentions. cleanup powers `legacy` on again - 'run ... powered it off for a backup
    and did not finish; powering it on' - which is false: no run powered it off, and no shutdown was under
    way (config-reference: the marker is for 'a guest still going down'). A VM whose shutdown was never
    started must be left as the admin put it."""
    conf, _r, _row = _no_tools_run(host, tmp_path)
    vmid = host.vmid_by_name("legacy")
    host.power_off(vmid)
    r = hotvcb(host, "cleanup", "-g", conf)
    assert power(host, vmid) == "Powered off", r.stdout[-2000:] + r.stderr[-1000:]


def test_a_dry_run_that_foresees_the_shutdown_timing_out_does_not_end_ok(host, tmp_path):
    """Before switching the cron line over, the admin dry-runs the ghettoVCB job (POWER_VM_DOWN_BEFORE_BACKUP=1,
    no hard power off), as migrating-from-ghettovcb.md step 2 says. One appliance has no VMware Tools. The dry
    run logs 'VMware Tools is not running in the guest: the real run's guest shutdown ... will time out', and
    then ends `OK, only a dryrun.` with exit 0, the VM `OK` in its table - the admin's script checks the exit
    code and the final line, and moves on. The real run fails the VM (exit 6). README: 'a dry run that finds
    what the real run would fail on ... exits the code that run would'; at the least it must not say OK."""
    host.create_vm("legacy", "datastore1", [{"size": "1M"}], power="on", tools=False)
    conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ITER_TO_WAIT_SHUTDOWN="1s", POWER_DOWN_TIMEOUT="3s")
    dry = hotvcb(host, "-m", "legacy", "-g", conf, "-d", "dryrun")
    # it saw it (said "will time out" until the real run stopped waiting out a shutdown the host refused)
    assert "will be refused" in dry.stdout, dry.stdout[-2000:]
    real = hotvcb(host, "-m", "legacy", "-g", conf)
    assert real.returncode == 6, real.stdout[-2000:]
    assert dry.returncode != 0 and _final_status(dry.stdout) != "OK, only a dryrun.", \
        (dry.returncode, _final_status(dry.stdout))


# ---------------------------------------------------------------------------------------------- controls

def test_a_mixed_night_of_many_vms_says_what_happened_to_each(host, tmp_path):
    """24 VMs with `-a`: one with a user snapshot (refused), one whose per-VM file has a bad value, one whose
    disk copy fails, one with an independent disk, one powered off, the rest fine. Exit 5 (some VMs and some
    disks failed), the table, the JSON report and the mail each name every VM with its result, and every
    good backup is sealed; the failed copy leaves no snapshot."""
    vms = {}
    for i in range(24):
        name = "vm%02d" % i
        specs = [{"size": "1M"}] + ([{"size": "1M", "mode": "independent-persistent"}] if i == 2 else [])
        vms[name] = host.create_vm(name, "datastore1", specs, power="off" if i == 6 else "on",
                                   snapshots=("before upgrade",) if i == 3 else ())
    confdir = tmp_path / "vmconf"
    confdir.mkdir()
    (confdir / "vm04").write_text("DISK_BACKUP_FORMAT=bogus\n")
    host.set_fault("clone.match", "vm05/")
    host.set_fault("clone.fail_at", 50)
    expect = {n: "ok" for n in vms}
    expect.update(vm02="warn", vm03="error", vm04="error", vm05="error")
    report = tmp_path / "report.json"
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, **smtpserver.mail_keys(server))
        r = hotvcb(host, "-a", "-g", conf, "-c", confdir, "--json-report", report, timeout=300)
        [mail] = smtpserver.wait_mail(server)
    assert r.returncode == 5, r.stdout[-3000:]
    status = _final_status(r.stdout)
    assert status == "ERROR: Only some of the VMs backed up, and some disk(s) failed!", status
    assert status in str(mail.message["Subject"])
    data = json.loads(report.read_text())
    assert data["exit_code"] == 5 and data["status"] == status
    assert {v["vm"]: v["result"] for v in data["vms"]} == expect
    table = {ln.split(" -- info: ", 1)[1].split()[0]: ln.split()[5] for ln in r.stdout.splitlines()
             if " -- info: vm" in ln and ("  OK  " in ln or "  WARN  " in ln or "  ERROR  " in ln)}
    assert table == {n: res.upper() for n, res in expect.items()}, table
    text = _plain(mail)
    for n, res in expect.items():
        assert any(ln.split()[:2] == [res.upper(), n] for ln in text.splitlines()), (n, res)
    for n, res in expect.items():
        assert bool(sealed(host, n)) == (res != "error"), n
    assert all(set(snapshot_names(host, vmid)) <= {"before upgrade"} for vmid in vms.values())


def test_a_vm_of_ten_disks_on_three_datastores_under_user_snapshots_restores_equal(host, tmp_path):
    """A VM named `Bü & $x % 'q"` of ten disks: on its home datastore, on ds5, on `fast ssd`, one 2gbsparse,
    one SATA, one NVMe, one zeroedthick, one independent-nonpersistent and one virtual RDM, under two user
    snapshots (ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1). Exit 3 (the independent disk is in no backup);
    the restored copy's nine disks hold what the VM's disks hold, compared with qemu-img for the flat ones."""
    host.add_datastore("fast ssd", 2 << 30)
    specs = [{"size": "1M"}, {"size": "1M", "datastore": "ds5"}, {"size": "2M", "datastore": "fast ssd"},
             {"size": "1M", "format": "2gbsparse"}, {"size": "1M", "bus": "sata"}, {"size": "1M", "datastore": "ds5"},
             {"size": "1M", "format": "zeroedthick"}, {"size": "1M", "mode": "independent-nonpersistent"},
             {"size": "1M", "rdm": "virtual"}, {"size": "1M", "bus": "nvme", "datastore": "fast ssd"}]
    name = "Bü & $x % 'q\""
    vmid = _named(host, "big", name, specs, power_state="off")
    host.power_on(vmid)
    snapshots.create(host, vmid, "user snap 1", "d")
    snapshots.create(host, vmid, "user snap 2", "d")
    r = hotvcb(host, "-m", name, "-g", write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1))
    assert r.returncode == 3 and "9/10" in r.stdout, r.stdout[-2500:]
    folder = os.path.basename(backup_root(host, name.replace("%", "%25")))
    [backup] = sealed(host, folder)
    r = hotvcb(host, "restore", "%s/%s/%s" % (VOLUME, folder, backup), "--datastore", "datastore1", "--name", "copy")
    assert r.returncode == 3, r.stdout[-2500:]  # the independent disk is left disconnected, as it says
    src = {n: p for n, p, m in host.vm_disks(vmid) if m == "persistent"}
    dst = {n: p for n, p, m in host.vm_disks(host.vmid_by_name("copy"))}
    assert sorted(src) == sorted(dst)
    for node in src:
        assert host.read_disk(src[node]) == host.read_disk(dst[node]), node
    qemu_img = shutil.which("qemu-img")
    if qemu_img:
        flat = host.real(dst["scsi0:0"]).replace(".vmdk", "-flat.vmdk")
        original = tmp_path / "scsi0-0.raw"
        original.write_bytes(host.read_disk(src["scsi0:0"]))
        c = subprocess.run([qemu_img, "compare", "-f", "raw", "-F", "raw", str(original), flat],
                           capture_output=True, text=True)
        assert c.returncode == 0, c.stdout + c.stderr
