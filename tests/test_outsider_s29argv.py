"""Outside tests, session 29: how hotvcb reads its command line after today's change (options before a
command are its own, ghettoVCB-style flag lines are backups, a VM named like a command is -m's value).
Each xfail is one defect, asserting what the admin should have seen."""

import subprocess

import pytest

from cronsite import fake_crontab, qemu_site  # noqa: F401  (the fixtures)
from localcli import json_of, local, qemu, said  # noqa: F401  (qemu: the fixture)


@pytest.mark.parametrize("vm", ["backup", "status", "list"])
def test_restore_latest_of_a_vm_named_like_a_command_before_the_command_word(qemu, vm):
    """The backup server's own VM is called `backup` (today's fix: `-m backup` is -m's value). Its admin
    restores it with the options first, as architecture.md says works (`options before a command name are
    its own`): `hotvcb --latest backup restore -g F`. hotvcb took `backup` (the value of --latest) for the
    command and said `unrecognized option --latest` although --latest is restore's own option; for a VM
    named `status` the restore's usage error even exited 3 (status's UNKNOWN, a backup's "disks failed").
    It must read exactly as `hotvcb restore --latest backup -g F`."""
    conf = qemu[1]
    want = local("restore", "--latest", vm, "-g", conf)
    r = local("--latest", vm, "restore", "-g", conf)
    assert "unrecognized option --latest" not in r.stderr, said(r)
    assert (r.returncode, r.stderr) == (want.returncode, want.stderr), (said(r), said(want))


@pytest.mark.parametrize("spelling", ["separate", "glued"])
def test_global_option_after_ghettovcb_flags_runs_the_backup(qemu, spelling):
    """An admin moving a ghettoVCB line to a KVM box appends the target: `hotvcb -a -g F --qemu DIR` (or for
    SSH mode `... --host root@esxi01`). `schedule install -- -a -g F --qemu DIR` takes these words (its help:
    "global options (--qemu, --host, ...) may stand here too") and installs `--qemu DIR backup -a -g F`;
    operations.md: "Whatever can be run can be scheduled, with exactly the flags given". But the admin's
    test run by hand with the same words is refused, `unrecognized arguments: --qemu DIR`, exit 1. The
    same words must run the same job as `hotvcb --qemu DIR -a -g F` (here: no VM, exit 7)."""
    qmp, conf = qemu
    target = ["--qemu", qmp] if spelling == "separate" else ["--qemu=%s" % qmp]
    want = local(*target, "-a", "-g", conf)
    assert want.returncode == 7 and "No VMs backed up!" in said(want), said(want)
    r = local("-a", "-g", conf, *target)
    assert r.returncode == 7 and "No VMs backed up!" in said(r), said(r)


@pytest.mark.parametrize("line, stray", [(["--json", "-d", "debug", "status"], "-d"),
                                         (["--json", "--jsn", "status"], "--jsn"),
                                         (["-g", "CONF", "--json", "-x", "status"], "-x")])
def test_json_before_status_with_a_stray_option_still_gives_the_monitor_unknown_json(qemu, line, stray):
    """A monitor's check is written `hotvcb --json -g F status` (operations.md: `hotvcb -g F --json status` is
    `status -g F --json`). Debugging it, the admin adds ghettoVCB's `-d debug` in front. operations.md: an
    option status has not is UNKNOWN naming it, and "On UNKNOWN the JSON is {"status": "UNKNOWN", ...}, also
    for a bad command line". hotvcb exits 3 but prints no JSON at all: the monitor's JSON parser fails and
    reports its own error instead of the reason."""
    qmp, conf = qemu
    r = local("--qemu", qmp, *[str(conf) if w == "CONF" else w for w in line])
    assert r.returncode == 3, said(r)
    report = json_of(r)
    assert report["status"] == "UNKNOWN" and stray in report["message"], report


def _our_line(table):
    lines = [ln for ln in table.read_text().splitlines() if ln.endswith("# hotvcb:hotvcb")] if table.exists() else []
    return lines[0] if lines else None


def test_schedule_install_takes_the_run_line_with_its_global_option_and_the_word_backup(fake_crontab, qemu_site):
    """README: schedule install schedules exactly the job given, "`--qemu`/`--host …` after `--`", and a
    leading `backup` word is accepted (`-- backup -m web`). The admin pastes the line that works by hand,
    `--qemu /run/qmp backup -m 'vm one' -g F` (README's own `hotvcb --libvirt backup -m NAME -g F` shape,
    operations.md's `hotvcb --host root@esxi01 ... backup -f vms -g F`), after `--`. hotvcb refused it:
    `the backup arguments are not valid: unrecognized arguments: backup`. It must install the same line as
    `-- --qemu DIR -m 'vm one' -g F` does."""
    qmp, conf = qemu_site
    base = ["schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", "--qemu", str(qmp)]
    ok = local(*base, "-m", "vm one", "-g", conf)
    assert ok.returncode == 0, said(ok)
    want = _our_line(fake_crontab)
    assert want and "backup -m 'vm one'" in want, want
    fake_crontab.unlink()
    r = local(*base, "backup", "-m", "vm one", "-g", conf)
    assert r.returncode == 0, said(r)
    assert _our_line(fake_crontab) == want


@pytest.mark.parametrize("vm", ["backup", "status"])
def test_json_file_spelling_with_a_vm_named_like_a_command_is_still_a_backup(qemu, tmp_path, vm):
    """Two of today's promises together: `backup --json FILE` still names the report file (b4c5217) and a VM
    named like a command, `-m backup`, is -m's value (60a7867); ghettoVCB style the word backup may be left out.
    `hotvcb --json /var/log/r.json -m backup -g F` (the backup server's own VM) is refused with `option -m has
    no value: backup is the command, not its value` (for `-m status`: `unrecognized option r.json`), exit 1,
    and the nightly job backs up nothing. The `--json` optional value stops the scan of the backup's words, so
    the -m value is taken for the command. It must run as `hotvcb backup --json r.json -m backup -g F`."""
    qmp, conf = qemu
    want = local("--qemu", qmp, "backup", "--json", tmp_path / "want.json", "-m", vm, "-g", conf)
    assert want.returncode == 6 and (tmp_path / "want.json").exists(), said(want)  # no such VM here: it failed
    r = local("--qemu", qmp, "--json", tmp_path / "r.json", "-m", vm, "-g", conf)
    assert "is the command" not in r.stderr and "unrecognized option" not in r.stderr, said(r)
    assert r.returncode == 6 and (tmp_path / "r.json").exists(), said(r)


@pytest.mark.parametrize("option", [
    "--qem",  # abbreviated: read as --qemu by the check and the installed line alike
    "--qemu",  # the full name: installed before `backup`, the line runs
])
def test_schedule_install_never_installs_a_line_that_cannot_parse(fake_crontab, qemu_site, tmp_path, option):
    """operations.md: before anything is written, install runs the backup's own checks: "the arguments parse".
    The admin abbreviates, `schedule install --cron … -- --qem /run/qmp -m 'vm one' -g F` (argparse takes
    unique prefixes, and hotvcb's docs use them: `--json-r`). The check parsed `--qem` as --qemu (prefix),
    but the job's global options were picked out by exact name only, so `--qem DIR` stayed in the backup's
    words: the installed line is `hotvcb --qemu DIR backup --qem DIR -m 'vm one' …`, and every night cron
    gets `unrecognized arguments: --qem DIR`, exit 1, no backup. Either refuse the abbreviation at install
    or install a line that runs (here: a dry run)."""
    import shlex

    qmp, conf = qemu_site
    r = local("schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", option, qmp,
              "-m", "vm one", "-g", conf, "-d", "dryrun")
    if r.returncode != 0:
        assert option in r.stderr and _our_line(fake_crontab) is None, said(r)
        return
    line = _our_line(fake_crontab)
    command = shlex.split(line.split(" >> ")[0])[5:]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert "unrecognized arguments" not in said(run) and run.returncode != 1, (line, said(run))


@pytest.mark.parametrize("option", ["--port", "--identity", "--known-hosts"])
def test_a_global_option_left_empty_before_status_is_unknown_with_json(qemu, option):
    """The fleet check is `hotvcb --host root@esxi01 --identity $KEY status -g F --json`; on one monitor $KEY
    (or $PORT) is unset and unquoted, so the shell passes `--identity status -g F --json`. Quoted, the same
    mistake (`--identity ""`) gives the monitor UNKNOWN (3) and its JSON naming the option, as operations.md
    promises for any bad command line of status. Unquoted, hotvcb took the command word for the option's value,
    read the rest as a ghettoVCB-style backup and answered `hotvcb backup: error: argument --json: a backup has
    no --json output` (for --port: `invalid int value: 'status'`), exit 1 (WARNING to Nagios), no JSON. A
    command word after a global option is the command (as `-g status` before a command is refused as `option -g
    has no value`): UNKNOWN with JSON naming the option."""
    r = local("--host", "root@esxi01", option, "status", "-g", qemu[1], "--json")
    assert r.returncode == 3, said(r)
    report = json_of(r)
    assert report["status"] == "UNKNOWN" and option in report["message"], report
    assert "backup" not in r.stderr, said(r)


@pytest.fixture
def unsealed_backup(tmp_path):
    """A backup folder that is not sealed: every correct reading of a restore of it ends 'not a good backup'."""
    folder = tmp_path / "vol" / "web" / "web-2026-01-01_00-00-00"
    folder.mkdir(parents=True)
    (tmp_path / "kvm").mkdir()
    return folder


def test_restore_libvirt_before_the_backup_does_not_take_the_backup_for_its_uri(unsealed_backup, tmp_path):
    """kvm.md: `hotvcb restore BACKUP --kvm DIR [--libvirt [URI]]` (the URI optional). The admin writes the
    options first, `hotvcb restore --kvm /var/lib/kvm --libvirt /vmfs/.../web-<time>`. hotvcb took the backup
    folder for libvirt's URI and answered `say what to restore: BACKUP or --latest VM` although the BACKUP was
    given. The global `--libvirt` takes the next word only when it is a URI (`--libvirt backup -m web` means
    the default one); the restore's own must read the same line as `restore BACKUP --kvm DIR --libvirt`."""
    want = local("restore", unsealed_backup, "--kvm", tmp_path / "kvm", "--libvirt", "-d", "dryrun")
    assert want.returncode == 6 and "not a good backup" in said(want), said(want)
    r = local("restore", "--kvm", tmp_path / "kvm", "--libvirt", unsealed_backup, "-d", "dryrun")
    assert "say what to restore" not in said(r), said(r)
    assert r.returncode == 6 and "not a good backup" in said(r), said(r)


def test_restore_kvm_and_libvirt_before_the_command_are_the_restores_own(unsealed_backup, tmp_path):
    """architecture.md: options before a command name are its own. `hotvcb --kvm DIR --libvirt restore BACKUP`
    (a KVM restore defining the domain, options first) was refused with `--kvm restores on this machine; drop
    --host/--qemu`: --kvm was moved after `restore`, --libvirt was kept as the global (backup target) option,
    and the message names two options the admin never typed. It must read as `restore BACKUP --kvm DIR
    --libvirt`."""
    want = local("restore", unsealed_backup, "--kvm", tmp_path / "kvm", "--libvirt", "-d", "dryrun")
    assert want.returncode == 6 and "not a good backup" in said(want), said(want)
    r = local("--kvm", tmp_path / "kvm", "--libvirt", "restore", unsealed_backup, "-d", "dryrun")
    assert "drop --host/--qemu" not in said(r), said(r)
    assert r.returncode == 6 and "not a good backup" in said(r), said(r)
