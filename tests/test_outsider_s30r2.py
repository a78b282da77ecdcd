"""Outside tests, session 30 round 2: what changed today, tried as an admin would (options given twice, a VM
list from a pipe, a signal at odd moments, a qcow2's own snapshots). Each xfail is one defect, asserting what
the admin should have seen."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from localcli import SRC, local, qemu, said  # noqa: F401  (qemu: the fixture)


# -- an option given twice ------------------------------------------------------------------------------------

@pytest.mark.parametrize("first, second", [("--json-report", "--json"), ("--json", "--json")])
def test_the_json_report_named_twice_with_two_files_is_refused(qemu, tmp_path, first, second):
    """The cron line has `--json-report /srv/monitor/hotvcb.json` (what the monitoring reads); the wrapper every
    job goes through adds `--json /var/log/hotvcb/last.json` (the spelling older jobs have, which operations.md
    says still names the file). Today's change refuses an option given twice with two values (`-g a -g b`,
    `--json-report A --json-r B`: "given twice ... give it once"), but through `--json` the second file silently
    wins: the monitor's file is never written and it keeps reading last week's report as current. Two report
    files must be refused naming both, as every other option is."""
    mine, wrappers = tmp_path / "monitor.json", tmp_path / "wrapper.json"
    r = local("--qemu", qemu[0], "backup", "-a", "-g", qemu[1], first, mine, second, wrappers)
    assert r.returncode == 1 and "given twice" in r.stderr, said(r)
    assert str(mine) in r.stderr and str(wrappers) in r.stderr, said(r)


@pytest.mark.parametrize("option", ["--qemu", "-w"])
def test_the_same_folder_with_a_trailing_slash_is_not_two_values(qemu, tmp_path, option):
    """The admin's wrapper (written with tab completion) adds `--qemu /run/qemu/` or `-w /var/tmp/hotvcb/`; the
    cron lines it wraps say `--qemu /run/qemu` / `-w /var/tmp/hotvcb`. Until today the same folder twice simply
    worked; now the run is refused `--qemu given twice, '/run/qemu' and '/run/qemu/'`, exit 1, and every night's
    backup is lost. Both name one folder (the project reads a trailing '/' as the same volume elsewhere:
    operations.md, 'a per-VM volume that is the global one in another spelling ... or a trailing /'). The same
    value twice is fine, says today's change; so is the same folder."""
    folder = str(qemu[0]) if option == "--qemu" else str(tmp_path / "work")
    os.makedirs(folder, exist_ok=True)
    r = local("--qemu", qemu[0], "-a", "-g", qemu[1], option, folder, option, folder + "/")
    assert "given twice" not in r.stderr, said(r)
    assert r.returncode == 7 and "No VMs backed up!" in said(r), said(r)  # the empty QMP folder: no VM to back up


# -- a VM list from a pipe ------------------------------------------------------------------------------------

def _reading_the_pipe(pid):
    """hotvcb (bash exec'd it with the process substitution's pipe as fd 63) has opened that pipe itself."""
    folder = "/proc/%d/fd" % pid
    try:
        given = os.readlink(os.path.join(folder, "63"))
        return any(os.readlink(os.path.join(folder, fd)) == given for fd in os.listdir(folder)
                   if fd not in ("0", "1", "2", "63"))
    except OSError:
        return False


def test_sigterm_while_the_vm_list_pipe_is_read_still_writes_the_log_and_the_report(qemu, tmp_path):
    """`hotvcb -f <(inventory-query web) -g F -l run.log --json-report r.json` under cron's `timeout`: the inventory
    query hangs, and the timeout's SIGTERM comes while hotvcb waits on the pipe (it may wait 60 s, today's change).
    The run exits 2 with only `hotvcb: interrupted by SIGTERM` on stderr: run.log is left empty (no final status)
    and no JSON report is written, so the monitor reads the previous night's r.json (OK) as tonight's. A list that
    names no VM, refused at the same point, writes both ("Final status: ERROR: the VM list ... names no VM"). An
    interrupted run must say so where the admin looks: the log's final status and the JSON report (exit 2)."""
    log, report = tmp_path / "run.log", tmp_path / "r.json"
    script = tmp_path / "run.sh"
    script.write_text("exec %s -m hotvcb --qemu '%s' backup -f <(exec sleep 30 2>/dev/null) -g '%s' -l '%s' "
                      "--json-report '%s'\n" % (sys.executable, qemu[0], qemu[1], log, report))
    run = subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, PYTHONPATH=SRC), cwd=str(tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not _reading_the_pipe(run.pid) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # hotvcb is waiting on the pipe (it waits up to 60 s)
        assert run.poll() is None and _reading_the_pipe(run.pid), "hotvcb never opened the list's pipe"
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        else:
            try:
                os.killpg(run.pid, signal.SIGKILL)  # the `sleep 30` writer
            except ProcessLookupError:
                pass
    assert run.returncode == 2, out
    assert "Final status: ERROR: interrupted by SIGTERM" in (log.read_text() if log.exists() else ""), out
    data = json.loads(report.read_text()) if report.exists() else {}
    assert data.get("exit_code") == 2 and "interrupted by SIGTERM" in data.get("status", ""), (data, out)


# -- a qcow2's own snapshots (tests/qemulab.py: `-S`, TCG, disks of a few MiB) -----------------------------------

@pytest.fixture
def lab(tmp_path):
    from qemuvm import QEMU, QEMU_IMG
    if QEMU is None or QEMU_IMG is None:
        pytest.skip("needs qemu-system-x86_64 and qemu-img (scripts/install-test-deps)")
    from qemulab import opened
    with opened(tmp_path, "s30r2") as made:
        yield made


def test_a_linked_clone_of_a_template_with_internal_snapshots_is_backed_up(lab):
    """The admin's VMs are linked clones (`qemu-img create -b template.qcow2 vmN.qcow2`) of a template that keeps
    its versions as internal snapshots (`qemu-img snapshot -c golden-2026-11 template.qcow2`). The VMs have no
    snapshot of their own, and none they could go back to (reverting the template would break every clone).
    Since today, with the default ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=0, every clone's nightly backup fails:
    "web has snapshots of its own: .../template.qcow2 holds internal snapshot(s) golden-2026-11". kvm.md: "An
    image standing on a backing image is read through either way (an external snapshot and a linked clone's
    template look alike)"; config-reference: the key refuses "a qcow2's internal snapshots" of the VM. The clone
    must be backed up as it was yesterday."""
    from qemuvm import qemu_img

    template = lab.image("template.qcow2")
    r = qemu_img("snapshot", "-c", "golden-2026-11", template)
    assert r.returncode == 0, r.stdout + r.stderr
    clone = os.path.join(lab.images, "web.qcow2")
    r = qemu_img("create", "-f", "qcow2", "-b", template, "-F", "qcow2", clone)
    assert r.returncode == 0, r.stdout + r.stderr
    lab.start("web", ["file=%s,format=qcow2,if=virtio" % clone])
    code, out = lab.backup("web")
    assert "snapshots of its own" not in out, out
    assert code == 0 and len(lab.backups("web")) == 1, out


# -- --power-state and the config's BACKUP_POWER_STATE ----------------------------------------------------------

@pytest.mark.parametrize("spelling", ["Suspended", "SUSPENDED", "suspended"])
def test_power_state_on_the_command_line_takes_any_case_as_the_config_does(lab, spelling):
    """BACKUP_POWER_STATE=Suspended is taken (the config reads its choices in any case); `--power-state Suspended`
    was refused "invalid choice", so a job moved from the config to the command line stopped running."""
    lab.start("p", ["file=%s,format=qcow2,if=virtio" % lab.image("p.qcow2")])  # -S: paused, so suspended
    code, out = lab.hotvcb("--qemu", lab.inventory, "backup", "-m", "p", "-g", lab.conf(), "-w", lab.workdir,
                           "--power-state", spelling)
    assert "invalid choice" not in out, out
    assert code == 0 and len(lab.backups("p")) == 1, out


def test_power_down_key_refusing_a_paused_guest_says_it_is_paused(lab):
    """With POWER_VM_DOWN_BEFORE_BACKUP=1 on bare QEMU (which cannot start a VM again) `--power-state suspended`
    refused each paused guest saying the key "shuts p down": the backup never shuts a paused guest down (only a
    running one), so the message must say why a paused one is refused, and how it is backed up."""
    lab.start("p", ["file=%s,format=qcow2,if=virtio" % lab.image("p.qcow2")])
    code, out = lab.hotvcb("--qemu", lab.inventory, "backup", "-m", "p", "-g", lab.conf(POWER_VM_DOWN_BEFORE_BACKUP=1),
                           "-w", lab.workdir, "--power-state", "suspended")
    assert code != 0 and "POWER_VM_DOWN_BEFORE_BACKUP" in out, out
    assert "shuts p down" not in out and "paused" in out, out
    assert "POWER_VM_DOWN_BEFORE_BACKUP=0" in out, out
