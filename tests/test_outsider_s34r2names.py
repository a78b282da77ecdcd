"""Outside tester, session 34 round 2: this morning's ESXi-side changes, tried as an admin.

List lines matched as written first (namelist.Listed / fitted), run table / mail / JSON report changes (a name
with a blank ended by a colon, a warning VM's JSON message, `0/N` for a VM refused before its copy), and the
modules split without a behaviour change (schedule/localsh.py, store/backup_files.py,
commands/schedule_hosts.py).

Tried and found sound (no test here): on a host with VMs `db` and `db `, a `-f` line `db ` with CRLF backs up
`db ` in local mode, SSH mode and file by file, with the per-VM file `db ` (not `db`) in each, and `status -f`
checks `db `; a line `db<TAB>` is `db`; a line `db<NBSP>` is refused naming 'db\\xa0' (did you mean 'db'); in
`-e` it is warned of; `-m 'db '` and `-a -e` naming `db ` over SSH (on the host and file by file); rotation,
`list VM`, `verify` and `status` of VMs `db`, `db ` and ` db` each keep to their own folder; a `--hosts` line
ending in a non-breaking space or `# comment` after spaces; the run table, the text mail, the HTML mail and the JSON report agree on names holding
`<`, `&`, `:`, umlauts and a leading blank (` lead:`), a VM refused for a user snapshot is `0/2` in all of them,
and a VM with an independent disk has the mail's reason as its JSON message; a UTF-8 BOM in a list; here-documents
(`<<-`, two on a line, inside `$(...)`) and `exit 0;`/`exit 0<TAB>` endings of local.sh; the localsh split
compared function by function with the code before it (no change).
"""

import json
import os
import subprocess
import sys

import pytest

import esxisim.vmx as vmx
from simhost import REPO, hotvcb, needs_root, vim, write_conf
from test_schedule_esxi import CRONTAB, LOCAL_SH, Esxi, _esxisim, pyz  # noqa: F401  (pyz: the fixture)

ESXI_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")
JOB = ["--", "-f", "/vmfs/volumes/ds1/vms to back up", "-g", "/vmfs/volumes/ds1/hotvcb.conf"]


@pytest.fixture
def esxi(tmp_path, pyz):  # noqa: F811
    host = Esxi(tmp_path / "host", "8.0.2", pyz)
    yield host
    _esxisim("destroy", str(host.path))


def _named(host, folder, name, specs=None, power_state="on"):
    vmid = host.create_vm(folder, "datastore1", specs or [{"size": "1M"}], power=power_state)
    data = host.load_vmx(vmid)
    data["displayName"] = name
    vmx.save(host.vmx_real(vmid), data)
    return vmid


def _rows(report):
    return {v["vm"]: v for v in json.loads(report.read_text())["vms"]}


def _job_lines(esxi, job="nightly"):
    return [ln for ln in esxi.read(CRONTAB).splitlines() if ln.endswith("# hotvcb:%s" % job)]


# ---------------------------------------------------------------------------------------------- defects

@ESXI_ROOT
def test_a_loop_appended_below_exit_0_does_not_cost_the_job_at_the_next_reboot(esxi):
    """Years ago a KB article had the admin run `cat >> /etc/rc.local.d/local.sh` to add a small loop at boot;
    it landed below the stock `exit 0` (dead code, harmless). Now they install the nightly job:
    `schedule install` answers 'persisted in /etc/rc.local.d/local.sh (re-added and crond restarted at boot)'
    with no warning, but it appended the boot block at the very end, below that column-0 `exit 0` (the `done`
    after the exit made localsh._final_exit give up). `schedule show` says 'survives a reboot: no ... re-run
    install to move it above'; the admin does, which changes nothing. After the next reboot the job is gone from
    the crontab and the backups silently stop. Install must put the block where it runs (above the first
    top-level `exit`), or at least warn at install time instead of saying it is persisted."""
    esxi.sh("cat >> %s <<'X'\nfor m in a b; do\n  echo $m > /tmp/m\ndone\nX" % LOCAL_SH)
    outs = []
    for _ in range(2):  # install, then again as `show` advises
        r = esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB)
        outs.append(r.stdout + r.stderr)
    (line,) = _job_lines(esxi)
    esxi.reboot()
    warned = all("exit" in out.lower() for out in outs)
    assert _job_lines(esxi) == [line] or warned, "install said:\n%s\nlocal.sh:\n%s" % (
        outs[0], esxi.read(LOCAL_SH))


@ESXI_ROOT
@pytest.mark.parametrize("final", ["exit $rc", "exit ${RC:-0}"])
def test_a_local_sh_ending_in_exit_of_a_variable_keeps_the_job_after_a_reboot(esxi, final):
    """The admin's local.sh keeps its own status: `rc=0`, a few boot commands each `|| rc=1`, and ends with
    `exit $rc` (or `exit ${RC:-0}`), so that a failed boot step shows in the boot log. `schedule install` says
    'persisted in /etc/rc.local.d/local.sh (re-added and crond restarted at boot)' and `schedule show` says
    'survives a reboot: yes' - but the block was appended below that exit (localsh._EXIT knows digits and
    `$?` only), the shell leaves before reaching it, and after the next reboot the nightly backup is gone from
    the crontab without a word. operations.md: the boot block goes above the boot file's final top-level
    `exit`. It must, or `show` must at least not say the job survives."""
    esxi.sh("sed -i 's/^exit 0$/rc=0\\necho mine > \\/tmp\\/mine || rc=1\\n%s/' %s"
            % (final.replace("$", "\\$"), LOCAL_SH))
    assert esxi.read(LOCAL_SH).rstrip().endswith("\n" + final), esxi.read(LOCAL_SH)
    esxi.hotvcb("schedule", "install", "--job", "nightly", "--cron", "0 2 * * *", *JOB)
    (line,) = _job_lines(esxi)
    shown = esxi.hotvcb("schedule", "show").stdout
    esxi.reboot()
    assert _job_lines(esxi) == [line] or "survives a reboot: yes" not in shown, \
        "after the reboot the job is gone, though show said:\n%s\nlocal.sh:\n%s" % (shown, esxi.read(LOCAL_SH))


@needs_root
def test_json_message_of_a_vm_with_a_failed_and_a_skipped_disk_is_not_empty(host, tmp_path):
    """VM `wf` has three disks: scsi0:2 is independent-persistent (in no backup), and tonight the copy of scsi0:1
    fails. The mail's line reads `WARN wf ... (failed disks: scsi0:1)` and `scsi0:2 is in no backup: independent
    disk ...`; the monitoring, which reads `--json-report`, gets `"result": "warn", "message": ""` and opens a
    ticket 'wf: warning:' with nothing after it - the very thing this morning's fix (notes in `message`) was for,
    and outcome.notes promises 'the mail's lines and the JSON report's `message` alike'. The row's message must
    carry the mail's note (and the failure)."""
    _named(host, "w", "wf", specs=[{"size": "1M"}, {"size": "1M"}, {"size": "1M", "mode": "independent-persistent"}])
    host.set_fault("clone.match", "/w/w_1")
    host.set_fault("clone.fail_at", 50)
    report = tmp_path / "r.json"
    r = hotvcb(host, "-a", "-g", write_conf(host), "--json-report", report)
    row = _rows(report)["wf"]
    assert row["result"] == "warn" and row["failed_disks"] == ["scsi0:1"], (r.returncode, row)
    assert "independent" in row["message"], row


@needs_root
def test_a_vm_refused_for_its_per_vm_file_does_not_read_as_a_vm_without_disks(host, tmp_path):
    """`-a -c vms/` on a host whose VM `percfg` has two disks; its per-VM file has a typo
    (`VM_BACKUP_ROTATION_COUNT=abc`), so the VM is refused before any copy. The table and the mail say
    `percfg ERROR 0/0` and the JSON row `"disks": 0` - the reading this morning's fix removed for a VM refused for
    a user snapshot or lack of room ('its 0/0 read as a VM without a disk': now `0/2`). The admin's dashboard
    shows a VM without disks and nobody looks at it. A refused VM whose disks the host lists must count them
    (`0/2`), whatever refused it."""
    _named(host, "p", "percfg", specs=[{"size": "1M"}, {"size": "1M"}])
    _named(host, "s", "snapped", specs=[{"size": "1M"}, {"size": "1M"}])
    confdir = tmp_path / "vms"
    confdir.mkdir()
    (confdir / "percfg").write_text("VM_BACKUP_ROTATION_COUNT=abc\n")
    vim(host, "vmsvc/snapshot.create", "2", "mine")
    report = tmp_path / "r.json"
    r = hotvcb(host, "-a", "-g", write_conf(host), "-c", confdir, "--json-report", report)
    rows = _rows(report)
    assert rows["snapped"]["result"] == "error" and rows["snapped"]["disks"] == 2, rows["snapped"]  # the fix
    assert rows["percfg"]["result"] == "error", (r.returncode, rows["percfg"])
    assert rows["percfg"]["disks"] == 2, rows["percfg"]


def test_a_host_list_comment_after_a_tab_is_a_comment(tmp_path):
    """The admin's fleet file for `status --hosts` aligns its notes with tabs, `root@esxi07<TAB># rack 3, on call: Jo`.
    operations.md: 'one `[user@]host[:port]` a line, `#` comments, also after a host'; with two spaces the line
    works. With the tab, the whole check ends `UNKNOWN: fleet.txt:1: 'root@esxi07\t# rack 3...' is not a host
    name (control character)` and no host of the fleet is checked (the monitoring shows UNKNOWN for everything,
    every night). A blank before the comment is a blank, tab or space: the host must be checked."""
    fleet = tmp_path / "fleet.txt"
    fleet.write_text("root@127.0.0.1:1\t# rack 3, on call: Jo\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "hotvcb", "--ssh-option", "ConnectTimeout=5", "status", "--hosts",
                        str(fleet)], capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
                       env=dict(os.environ, PYTHONPATH=REPO))
    out = r.stdout + r.stderr
    assert "control character" not in out and "cannot connect to root@127.0.0.1" in out, out


@needs_root
def test_list_tells_apart_two_vms_that_differ_by_a_trailing_blank(host, tmp_path):
    """VMs `db` (the old database server) and `db ` (the new one) are both backed up. To restore last night's
    `db `, the admin runs `hotvcb list -g hotvcb.conf`: four rows all reading `db   2026-12-05 ...`, two of one
    size and two of another, and nothing says which VM each belongs to (the run table says `db` and `db :`,
    status `db:` and `db :`; operations.md: so that the two 'can be told apart'). They pick by guesswork and
    restore the wrong database. Each row must name its VM so the two can be told apart."""
    _named(host, "old", "db")
    _named(host, "new", "db ", specs=[{"size": "2M"}])
    conf = write_conf(host)
    r = hotvcb(host, "-a", "-g", conf)
    assert r.returncode == 0, r.stdout[-2000:]
    r = hotvcb(host, "list", "-g", conf)
    lines = r.stdout.splitlines()
    head = [ln for ln in lines if ln.startswith("VM") and "TIME" in ln][0]
    cut = head.index("TIME")
    cells = [ln[:cut].rstrip() for ln in lines[lines.index(head) + 1:] if ln.strip()]
    assert len(cells) == 2, r.stdout
    assert cells[0] != cells[1], r.stdout


@needs_root
def test_the_vm_down_line_tells_which_of_two_twins_is_left_off(host, tmp_path):
    """VMs `db` and `db ` (old and new database server). The nightly job backs up `db ` in power-down mode
    (POWER_VM_DOWN_BEFORE_BACKUP=1) and hostd refuses to power it on again. The mail's first line - the one the
    on-call admin acts on at 3 a.m. - reads `VM(s) DOWN, powered off for a backup and NOT on again: db`, the
    blank invisible at the end of the line; the table below says `db :` as this morning's fix has it. Every
    line that names a VM with a blank at its end must show it as the table does (`db :`), above all the one
    that tells the admin which VM to power on."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail tests")
    import time
    _named(host, "old", "db")
    _named(host, "new", "db ")
    host.set_fault("power.on", "refuse")
    with smtpserver.smtp_server() as server:
        conf = write_conf(host, POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, EMAIL_LOG=1,
                          EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port, EMAIL_TLS="none",
                          EMAIL_TO="admin@example.org", EMAIL_DELAY_INTERVAL=0)
        r = hotvcb(host, "-m", "db ", "-g", conf)
        deadline = time.monotonic() + 10
        while not server.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        [mail] = list(server.messages)
    text = [p.get_content() for p in mail.message.walk() if p.get_content_type() == "text/plain"][0]
    down = [ln for ln in text.splitlines() if ln.startswith("VM(s) DOWN")]
    assert down, (r.returncode, text[:1500])
    assert "db" in down[0] and down[0] == down[0].rstrip(), down  # `db :` as the table, or quoted
