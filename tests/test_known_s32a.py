"""Testers' notes (session 31) pinned through the public command line: how an exit-9 run's final status
reads, whichever cause made it 9."""

import json

from simhost import hotvcb, needs_root, write_conf


# -- exit 9: the warning comes first in an otherwise OK run's status, whatever its cause ----------------------

@needs_root
def test_a_lost_log_puts_its_warning_before_an_ok_status_as_a_share_left_mounted_does(host, tmp_path):
    """README's exit 9 has two causes: the log could not be written everywhere, or the NFS share UNMOUNT_NFS=1
    was to unmount is still mounted. The second makes the final status `WARNING: NFS datastore … is still
    mounted; All VMs backed up OK!` (jobs/outcome said why: the status must not read "All VMs backed up OK!"
    first). A lost log made it `All VMs backed up OK!; WARNING: the log could not be written to …`: the mail's
    subject and the JSON report's status an admin or a monitor skims start "All VMs backed up OK!" on a run
    that exited 9. Both causes read the same: the warning first."""
    host.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "app", "-g", write_conf(host), "-w", tmp_path / "w", "-l", "/dev/full",
               "--json-report", report)
    assert r.returncode == 9, r.stdout + r.stderr
    status = json.loads(report.read_text())["status"]
    assert status.startswith("WARNING: the log could not be written to the log file /dev/full"), status
    assert status.endswith("; All VMs backed up OK!"), status
