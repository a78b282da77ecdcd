"""Outsider round s32, second ESXi pass: templates among the VMs and snapshot removals that leave a VM needing
consolidation, met in ways round one (test_outsider_s32sim.py, test_outsider_s32race.py) did not try: a user's
own snapshot beside the unconsolidated delta, and a restore onto a template's name."""

import json

import pytest

from simhost import backup_once, hotvcb, needs_root, vim, write_conf

pytestmark = needs_root


def _unconsolidated_beside_a_user_snapshot(host):
    """web has the user's snapshot `before-upgrade`; tonight's backup (ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)
    removes its own snapshot, and the host leaves web running on that snapshot's delta (Needs Consolidation):
    the conf, and the run's output."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on", snapshots=["before-upgrade"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP="1")
    host.set_fault("snapshot.remove", "unconsolidated-once")
    r = backup_once(host, conf, "web")
    out = r.stdout + r.stderr
    assert "web needs consolidation" in out and "web-000002.vmdk" in out, out  # the run saw it and said so
    with open(host.real("/vmfs/volumes/datastore1/web/web.vmx"), encoding="utf-8") as f:
        assert 'fileName = "web-000002.vmdk"' in f.read()  # the VM runs on a delta no snapshot owns
    with open(host.real("/vmfs/volumes/datastore1/web/web.vmsd"), encoding="utf-8") as f:
        assert 'snapshot.needConsolidate = "TRUE"' in f.read()
    return conf, out


def test_status_sees_consolidation_needed_beside_a_user_snapshot(host, tmp_path):
    """The admin keeps a snapshot `before-upgrade` on web and backs it up with
    ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1. Tonight the host removed hotvcb's snapshot from the tree but did not
    commit its delta: web now runs on web-000002.vmdk, which no snapshot owns, and the .vmsd says
    snapshot.needConsolidate (VMware's "Needs Consolidation"). The run warned, but the monitoring system runs
    `hotvcb status`, which answers "OK ... 0 CRIT, 0 WARN" and lists only the user's snapshot as OK: the delta
    grows unseen until the datastore fills. Without the user's snapshot the same state is "CRIT consolidation web:
    needs consolidation". status should flag web as needing consolidation (CRIT, or at least WARN) here too."""
    conf, _ = _unconsolidated_beside_a_user_snapshot(host)
    r = hotvcb(host, "status", "--json", "-g", conf)
    report = json.loads(r.stdout)
    flagged = [c for c in report["checks"] if c["name"] == "web" and c["severity"] in ("WARN", "CRIT")
               and "consolidat" in c["message"]]
    assert flagged and r.returncode != 0, r.stdout + r.stderr


def test_next_run_names_consolidation_beside_a_user_snapshot(host, tmp_path):
    """Same host as above (web on an unconsolidated delta beside the user's snapshot). The next night's job runs
    with the site's usual config, which does not allow snapshots: hotvcb refuses web with "web has 1
    snapshot(s); not backing it up (set ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1 to allow)". The admin sets it,
    and the VM stays on its growing delta, warned about night after night: the one thing the VM needs,
    consolidation, is not said. docs/architecture.md promises that the next run's pre-flight says the VM needs
    consolidation instead of pointing at ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP; with a user snapshot present it
    should at least name the consolidation too."""
    _unconsolidated_beside_a_user_snapshot(host)
    r = backup_once(host, write_conf(host, "strict.conf"), "web")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out  # refused: it has the user's snapshot
    refusal = [l for l in r.stdout.splitlines() if "-- error:" in l and "web" in l]
    assert refusal and any("consolidat" in l for l in refusal), out


def test_restore_onto_a_templates_name_does_not_warn_of_ambiguity(host, tmp_path):
    """The host has a template `tpl` (tpl.vmtx). The admin restores web's backup as a new VM called `tpl` on ds5
    (the name the team uses for the golden image's working copy). hotvcb warns "a VM named 'tpl' is already
    registered (vmid 2, .../tpl.vmtx) ... The host will have two VMs of that name, and a backup by name (-m, -f)
    refuses ambiguous names until one is renamed; restore with a new name": the admin renames it for nothing.
    hotvcb itself says a template is not a VM (backup -m tpl backs up the restored VM without any ambiguity). The
    restore should not call the template a VM of that name, nor predict a refusal that does not come."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    tpl = host.create_vm("tpl", "datastore1", [{"size": "2M"}], power="off")
    vim(host, "vmsvc/convert.toTemplate", tpl)
    conf = write_conf(host)
    assert backup_once(host, conf, "web").returncode == 0
    r = hotvcb(host, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "tpl")
    assert r.returncode == 0, r.stdout + r.stderr
    b = backup_once(host, conf, "tpl")  # the restored VM is backed up by name: no ambiguity
    assert b.returncode == 0, b.stdout + b.stderr
    assert "refuses ambiguous names" not in r.stdout and "two VMs of that name" not in r.stdout, r.stdout


def test_cold_backup_of_a_vm_needing_consolidation_names_it(host, tmp_path):
    """Last night the host left web on its delta after hotvcb's snapshot removal (Needs Consolidation); the run
    warned. The site backs up with ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1, and web was shut down for
    maintenance today. Tonight's run backs it up cold (no snapshot of hotvcb's to remove, so no post-removal check)
    and ends "All VMs backed up OK!", exit 0: the mail is green while web still needs consolidation (the .vmx on
    web-000001.vmdk, the .vmsd saying snapshot.needConsolidate). README: "A VM whose disks need consolidation (delta
    files and no snapshot ...) is named as such, with how to consolidate it, and not backed up until it is (unless
    ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)": the exception is the backing up, not the naming."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP="1")
    host.set_fault("snapshot.remove", "unconsolidated-once")
    first = backup_once(host, conf, "web")
    assert "web needs consolidation" in first.stdout, first.stdout + first.stderr
    host.power_off(vmid)
    with open(host.real("/vmfs/volumes/datastore1/web/web.vmx"), encoding="utf-8") as f:
        assert 'fileName = "web-000001.vmdk"' in f.read()  # still on the delta: nothing consolidated it
    r = backup_once(host, conf, "web")
    said = [l for l in r.stdout.splitlines() if "-- warning:" in l or "-- error:" in l]
    assert any("consolidat" in l for l in said), r.stdout + r.stderr


def test_status_names_a_listed_template_as_a_template(host, tmp_path):
    """web is backed up nightly from the list /vmfs/volumes/datastore1/vms (`-f`). A colleague powers it off and
    converts it to a template (web.vmtx) to clone new web servers from. The next backup rightly fails the entry with
    "'web' is a template (...web.vmtx), not a VM: templates are not backed up (convert it to a VM ..., or take it
    off the list)". The monitoring's `hotvcb status -f vms` says "CRIT backup web: listed, but no VM of that name
    is on this host": the on-call admin looks at the host client, sees web right there, and starts hunting a
    renamed or unregistered VM -- the message hotvcb's backup stopped giving for templates. status should say it is
    a template, as the backup does."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    vms = tmp_path / "vms"
    vms.write_text("web\n")
    assert hotvcb(host, "-f", str(vms), "-g", conf).returncode == 0
    host.power_off(vmid)
    vim(host, "vmsvc/convert.toTemplate", vmid)
    b = backup_once(host, conf, "web")
    assert b.returncode != 0 and "'web' is a template" in b.stdout, b.stdout + b.stderr
    r = hotvcb(host, "status", "--json", "-g", conf, "-f", str(vms))
    checks = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "web"]
    assert r.returncode != 0 and checks, r.stdout + r.stderr
    assert all("no VM of that name" not in c["message"] for c in checks), r.stdout
    assert any("template" in c["message"] for c in checks), r.stdout


def test_cleanup_counts_a_snapshot_whose_removal_left_disks_unconsolidated(host, tmp_path):
    """Cron's backup of web was killed -9 while it removed its snapshot; the admin runs `hotvcb cleanup`, as
    `status` tells them to. cleanup removes the dead run's snapshot (the host drops it from the tree but leaves web
    on its delta: Needs Consolidation, which cleanup rightly warns about) and the dead run's -partial folder, then
    ends "cleanup: 1 leftover(s) removed", exit 0. Two leftovers went (the snapshot is gone from web: snapshot.get
    lists none), and with no snapshot in the tree the admin reading the count believes one leftover is still there.
    docs/operations.md: "The last line counts what was removed; it exits 1 when something could not be". The
    snapshot should be counted as removed (2), or, if its removal counts as not done, cleanup should exit 1."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    backup_once(host, conf, "web", env={"HOTVCB_CRASH_AT": "removing-snapshot"})
    assert [n for n in _snapshots(host, vmid) if n.startswith("hotvcb-")]
    host.set_fault("snapshot.remove", "unconsolidated-once")
    r = hotvcb(host, "cleanup", "-g", conf)
    out = r.stdout + r.stderr
    assert "web needs consolidation" in out and "removing unfinished backup" in out, out
    assert _snapshots(host, vmid) == [], out  # the snapshot is gone from the VM
    assert "2 leftover(s) removed" in out or r.returncode == 1, out


def _snapshots(host, vmid):
    return [l.split(":", 1)[1].strip() for l in vim(host, "vmsvc/snapshot.get", vmid).splitlines()
            if "Snapshot Name" in l]


def test_consolidation_advice_does_not_delete_the_users_snapshots(host, tmp_path):
    """web carries the admin's snapshot `before-upgrade` (the way back if tomorrow's upgrade fails) and is backed up
    with ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1. The host leaves web on hotvcb's delta after the removal, and
    the run warns "web needs consolidation ...; consolidate it: ... or take a snapshot and remove all: `vim-cmd
    vmsvc/snapshot.create 1 consolidate` then `vim-cmd vmsvc/snapshot.removeall 1`". The admin, on a host without
    vCenter, pastes the two commands: removeall deletes `before-upgrade` too, and the way back is gone
    (docs/architecture.md itself says removeall "would take the user's snapshots too", which is why hotvcb never
    uses it). Advice for a VM with snapshots of the user's must not send the admin to removeall, or must at least
    say it deletes them, naming them."""
    conf, out = _unconsolidated_beside_a_user_snapshot(host)
    advice = [l for l in out.splitlines() if "needs consolidation" in l]
    assert advice, out
    vmid = host.vmid_by_name("web")
    for line in advice:
        m = "vim-cmd vmsvc/snapshot.removeall %s" % vmid
        if m in line:  # following it as written:
            vim(host, "vmsvc/snapshot.create", vmid, "consolidate")
            vim(host, "vmsvc/snapshot.removeall", vmid)
            gone = "before-upgrade" not in _snapshots(host, vmid)
            assert not gone or "before-upgrade" in line, line


def test_json_report_says_why_a_vm_needing_consolidation_warns(host, tmp_path):
    """The site's monitoring reads each night's `--json-report` rather than the log. Tonight the host left web on
    its delta after hotvcb's snapshot removal; the log and the text mail say "web needs consolidation ...". The JSON
    report says status "WARNING: All VMs backed up, but some disk(s) failed!", and web's row result "warn" with
    message "", failed_disks [] and skipped_disks []: the monitoring (and the HTML mail, built from the same rows)
    can only tell that something is wrong with web, not what, and no disk failed. The row should carry the
    warning (the VM needs consolidation), as the text report does."""
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    host.set_fault("snapshot.remove", "unconsolidated-once")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "web", "-g", conf, "--json-report", str(report))
    assert "web needs consolidation" in r.stdout, r.stdout + r.stderr
    data = json.loads(report.read_text(encoding="utf-8"))
    [row] = [v for v in data["vms"] if v["vm"] == "web"]
    assert row["result"] == "warn", row
    assert "consolidat" in json.dumps(row), json.dumps(data, indent=1)


def test_dry_run_after_a_killed_run_plans_the_snapshot_tree(host, tmp_path):
    """web has the user's snapshot u1 and is backed up with ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1 and
    BACKUP_SNAPSHOT_TREE=1. Last night's run was killed -9 right after it took its snapshot. In the morning the admin
    checks the next run with `-d dryrun`: it says it would remove the leftover snapshot, plans web-000001.vmdk and
    "TOTAL NEEDED: 1.3 MiB" -- no "SNAPSHOT TREE: ..." line. The same dry run without the dead run's snapshot plans
    "SNAPSHOT TREE: 1 snapshot(s) ('u1') ... -> snapshot-tree/" and "TOTAL NEEDED: 2.7 MiB", and the real run that
    follows does keep the tree (it clones the base disks too): the dry run under-plans what the real run writes,
    and would call a target with room for the current state alone big enough."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on", snapshots=["u1"])
    conf = write_conf(host, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP="1", BACKUP_SNAPSHOT_TREE="1")
    backup_once(host, conf, "web", "-w", tmp_path / "w", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert any(n.startswith("hotvcb-") for n in _snapshots(host, vmid))
    dry = hotvcb(host, "-m", "web", "-g", conf, "-d", "dryrun")
    assert dry.returncode == 0 and "would remove leftover snapshot" in dry.stdout, dry.stdout + dry.stderr
    real = backup_once(host, conf, "web")
    assert real.returncode == 0 and "Snapshot tree of 1 snapshot(s) kept" in real.stdout, real.stdout + real.stderr
    assert "SNAPSHOT TREE: 1 snapshot(s) ('u1')" in dry.stdout, dry.stdout


def test_dry_run_after_a_killed_run_predicts_the_consolidation_refusal(host, tmp_path):
    """web is in two jobs: the weekly one (weekly.conf, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1) and the nightly
    one (hotvcb.conf, the defaults). Last week's run left web needing consolidation (warned); this week's weekly run
    was killed -9 right after it took its snapshot. Before tonight, the admin checks the nightly job with
    `-d dryrun`: it says it would remove the leftover snapshot, "delta files are checked once the leftover snapshot
    is gone", and ends "OK, only a dryrun.", exit 0. The real nightly run removes the snapshot and refuses web:
    "needs consolidation: delta files web-000001-sesparse.vmdk, web-000001.vmdk and no snapshot", exit 6. The dead
    run's snapshot stands on the unconsolidated delta (the .vmx before it, and the .vmsd's needConsolidate, show
    it), so the dry run could say so; README: a dry run that finds what the real run would fail on exits that run's
    code."""
    vmid = host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    weekly = write_conf(host, "weekly.conf", ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP="1")
    nightly = write_conf(host)
    host.set_fault("snapshot.remove", "unconsolidated-once")
    assert "web needs consolidation" in backup_once(host, weekly, "web").stdout
    backup_once(host, weekly, "web", "-w", tmp_path / "w", env={"HOTVCB_CRASH_AT": "snapshot-created"})
    assert any(n.startswith("hotvcb-") for n in _snapshots(host, vmid))
    dry = hotvcb(host, "-m", "web", "-g", nightly, "-d", "dryrun")
    assert "would remove leftover snapshot" in dry.stdout, dry.stdout + dry.stderr
    real = backup_once(host, nightly, "web")
    assert real.returncode == 6 and "needs consolidation" in real.stdout, real.stdout + real.stderr
    assert dry.returncode == real.returncode, dry.stdout + dry.stderr
