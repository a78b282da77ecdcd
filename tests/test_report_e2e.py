"""The run report: a table in the log, readable HTML in the mail (rendered by a real
browser), and --json-report for machines."""

import json
import re
import shutil
import subprocess
import time

import pytest

from esxisim import snapshots
from simhost import hotvcb, make_host, needs_root, write_conf

pytestmark = needs_root
CHROMIUM = shutil.which("chromium")


def render(html_path, out_dir):
    """Chromium's DOM of the page (and a screenshot beside it), headless and offline."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--user-data-dir=%s" % (out_dir / "profile")]
    dom = subprocess.run([CHROMIUM] + flags + ["--dump-dom", "file://%s" % html_path], capture_output=True,
                         text=True, timeout=120)
    shot = out_dir / "report.png"
    subprocess.run([CHROMIUM] + flags + ["--window-size=1100,420", "--screenshot=%s" % shot,
                                         "file://%s" % html_path], capture_output=True, timeout=120)
    return dom.stdout, shot


def test_the_run_report_in_the_log_the_mail_and_json(tmp_path):
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail part")
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("Web <prod> & Co", "datastore1", [{"size": "8M"}], power="on")
        host.create_vm("two disks", "datastore1", [{"size": "4M"}, {"size": "4M"}], power="on")
        host.set_fault("clone.fail_at", "50")
        host.set_fault("clone.match", "two disks_1.vmdk")
        report_file = tmp_path / "run.json"
        with smtpserver.smtp_server() as server:
            conf = write_conf(host, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                              EMAIL_TLS="none", EMAIL_TO="admin@example.com")
            r = hotvcb(host, "-m", "Web <prod> & Co", "-m", "two disks", "-g", conf, "--json-report", report_file)
            assert r.returncode == 3, r.stdout + r.stderr
            deadline = time.monotonic() + 10
            while not server.messages and time.monotonic() < deadline:
                time.sleep(0.1)
        # the log: one table row per VM right before the final status
        lines = r.stdout.splitlines()
        i = next(k for k, l in enumerate(lines) if re.search(r"info: VM\s+RESULT\s+DISKS\s+SIZE", l))
        assert re.search(r"Web <prod> & Co\s+OK\s+1/1\s+8\.0M", lines[i + 1])
        assert re.search(r"two disks\s+WARN\s+1/2\s+4\.0M", lines[i + 2])
        assert "Final status: WARNING: All VMs backed up, but some disk(s) failed!" in lines[i + 3]

        data = json.loads(report_file.read_text())
        assert data["exit_code"] == 3 and data["status"].startswith("WARNING")
        web, two = data["vms"]
        assert (web["vm"], web["result"], web["disks_ok"], web["bytes"], web["good_backups"]) == (
            "Web <prod> & Co", "ok", 1, 8 << 20, 1)
        assert two["failed_disks"] == ["scsi0:1"] and two["newest_good"] is None

        [mail] = server.messages
        parts = {p.get_content_type(): p for p in mail.message.walk()}
        assert "text/plain" in parts and "text/html" in parts
        assert "---- full log ----" in parts["text/plain"].get_content()
        page = tmp_path / "report.html"
        page.write_text(parts["text/html"].get_content(), encoding="utf-8")
    finally:
        host.stop()
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (scripts/install-test-deps installs it)")
    dom, shot = render(page, tmp_path)
    rows = re.findall(r"<tr><td>(.*?)</td><td[^>]*>(\w+)</td><td>(\d+/\d+)</td>", dom)
    assert rows == [("Web &lt;prod&gt; &amp; Co", "OK", "1/1"), ("two disks", "WARN", "1/2")], dom[:2000]
    assert "WARNING: All VMs backed up, but some disk(s) failed!" in dom
    assert shot.exists() and shot.stat().st_size > 5000


def test_a_vm_refused_before_any_copy_counts_the_disks_it_has(host, tmp_path):
    """A VM of two disks refused for its user's snapshot (ghettoVCB's default) reads `0/2` in the table and
    `"disks": 2` in --json-report: `0/0` read as a VM without a disk, which is another problem."""
    vmid = host.create_vm("snapped", "datastore1", [{"size": "1M"}, {"size": "1M"}], power="on")
    snapshots.create(host, vmid, "user snap", "d")
    report = tmp_path / "report.json"
    r = hotvcb(host, "-m", "snapped", "-g", write_conf(host), "--json-report", report)
    assert r.returncode == 6, r.stdout[-2000:]
    [row] = json.loads(report.read_text())["vms"]
    assert (row["result"], row["disks_ok"], row["disks"]) == ("error", 0, 2), row
    assert re.search(r"info: snapped\s+ERROR\s+0/2\s", r.stdout), r.stdout[-2000:]
