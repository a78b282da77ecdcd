"""Known defects, stop 34: what an ESXi host's login shell prints around SSH mode's run on the host (hostrun.py,
onhost_boot.py), through the CLI against a real sshd on loopback (tests/test_known_s34ssh.py sets such hosts up).

A security team's startup file may greet every session and say goodbye as it ends (`trap 'echo "esxi01: session
closed"' EXIT`), on stdout or stderr. The run's report, the host's reason it cannot run hotvcb, and the run's
output the admin reads are the host's end's alone, never glued to what the shell says.
"""

import json
import os

from simhost import needs_root, sealed, write_conf
from sshd import needs_sshd
from sshsite import site  # noqa: F401  (the fixture)

GREETING = 'echo "Welcome to esxi01 - authorized use only"\n'
FAREWELL = "trap 'echo \"esxi01: session closed\"' EXIT\n"
FAREWELL_ON_STDERR = "trap 'echo \"esxi01: session closed\" >&2' EXIT\n"


@needs_root
@needs_sshd
def test_a_farewell_on_stdout_never_corrupts_the_report_of_a_backup_run_on_the_host(host, site, tmp_path):
    """The backup ended all OK on the host; the client read the farewell after the `end` line as part of the JSON
    report and ended with exit 9, `WARNING: the run on the host ended without its report (exit 0: Extra data...)`,
    and --json-report recorded no VM."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    (site.sshd.dir / ".bashrc").write_text(GREETING + FAREWELL)
    report = tmp_path / "report.json"
    r, _ = site.run("backup", "-m", "web", "-g", conf, "--json-report", report)
    assert r.returncode == 0, r.out
    assert "without its report" not in r.out and "session closed" not in r.out and "Welcome" not in r.out, r.out
    assert "going file by file" not in r.out, r.out  # it did run on the host
    assert len(sealed(host, "web")) == 1
    assert [vm["vm"] for vm in json.loads(report.read_text())["vms"]] == ["web"]


@needs_root
@needs_sshd
def test_a_farewell_on_stderr_is_never_the_reason_the_host_cannot_run_hotvcb(host, site):
    """The host's folder of builds is open to others, so its end refuses to run there and the backup goes file by
    file, saying why. The reason given was the last line of the session's stderr: the shell's `esxi01: session
    closed`, not the host's end's `... is not a private folder`."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    os.makedirs(str(site.folder))
    os.chmod(str(site.folder), 0o777)
    (site.sshd.dir / ".bashrc").write_text(FAREWELL_ON_STDERR)
    r, _ = site.run("backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.out
    assert "going file by file" in r.out and "not a private folder" in r.out, r.out
    assert "session closed" not in r.out, r.out


@needs_root
@needs_sshd
def test_a_farewell_on_stderr_is_not_relayed_as_the_runs_output(host, site):
    """A backup run on the host that went all OK says nothing on stderr (cron mails whatever a job prints there);
    the farewell the host's shell said as the session ended was relayed to the admin's stderr as the run's."""
    host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    conf = write_conf(host)
    (site.sshd.dir / ".bashrc").write_text(FAREWELL_ON_STDERR)
    r, _ = site.run("backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, r.out
    assert "going file by file" not in r.out, r.out
    assert "session closed" not in r.stderr, r.stderr
