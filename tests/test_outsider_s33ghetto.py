"""Outside test, stop 33: ghettoVCB compatibility, key by key and flag by flag, against ghettoVCB's source.

What ghettoVCB does is read from lamw/ghettoVCB (ghettoVCB.sh, ghettoVCB-restore.sh, ghettoVCB.conf and
its templates) and said in each test; where hotvcb's docs name a deliberate, reasoned difference, it is
not reported here. Each defect is a strict xfail until fixed. Tiny disks; one simulated host per test.
"""

import os
import time

import pytest

from hotvcb import cli
from simhost import hotvcb, make_host, needs_root, write_conf


@pytest.fixture
def site(tmp_path):
    """A host with VM `web` (1 MiB, on)."""
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
        host.tmp = tmp_path
        yield host
    finally:
        host.stop()


# -- 1. TIMEZONE, the first line of ghettoVCB's own ghettoVCB.conf, is "unknown" -----------------------------
def test_ghettovcbs_timezone_key_is_named_as_ghettovcbs(tmp_path, capsys):
    """The admin copies the ghettoVCB.conf that ghettoVCB's VIB installs (/opt/ghettovcb/ghettoVCB.conf); its
    first line is `TIMEZONE=UTC` (ghettoVCB.sh 2019_02_07: "Adjust the date information with the timezone
    for logging, directory naming, etc.", used as `TZ=$TIMEZONE date` for the backup folders' names, the
    log and the mail's Date). migrating-from-ghettovcb.md and config-reference.md promise that ghettoVCB's
    own keys hotvcb does not take are "named as such, with why" (hotvcb/ghettokeys.py), never as a typo;
    TIMEZONE is missing there, so the dry run says `unknown key TIMEZONE ignored`, as for a typo, and the
    admin whose ghettoVCB named backups in Europe/Berlin time cannot tell what hotvcb names them by. It
    should say TIMEZONE is ghettoVCB's key, ignored, and why (hotvcb names backups by the host's clock)."""
    volume = tmp_path / "backups"
    volume.mkdir()
    conf = tmp_path / "ghettoVCB.conf"
    conf.write_text("TIMEZONE=UTC\nVM_BACKUP_VOLUME=%s\nDISK_BACKUP_FORMAT=thin\n" % volume)
    assert cli.main(["list", "-g", str(conf)]) == 0
    err = capsys.readouterr().err
    line = [ln for ln in err.splitlines() if "TIMEZONE" in ln]
    assert line, err
    assert "unknown key" not in line[0] and "ghettoVCB" in line[0], line[0]


# -- 2. EMAIL_TO written Outlook-style: the log names a recipient that got nothing ---------------------------
@needs_root
def test_the_mail_log_line_names_only_recipients_that_were_sent_to(site):
    """A Windows admin lists the report's recipients as Outlook does, `EMAIL_TO="backup@corp;oncall@corp"`.
    (ghettoVCB split EMAIL_TO only at commas; config-reference.md: EMAIL_TO is ghettoVCB's comma list.)
    hotvcb hands the whole item to the SMTP client, whose address parser keeps the first address and drops
    the rest: only backup@corp gets the report. The log then says `e-mail report sent via … to
    backup@corp;oncall@corp`, so whoever checks why the on-call never heard of a failed night reads that
    they were mailed. Either both get it, or the log must not claim the second was sent to (and a warning
    should name the address that was dropped)."""
    smtpserver = pytest.importorskip("smtpserver", reason="aiosmtpd is needed for the mail tests")
    with smtpserver.smtp_server() as server:
        conf = write_conf(site, EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port,
                          EMAIL_TLS="none", EMAIL_TO='"backup@example.org;oncall@example.org"',
                          EMAIL_DELAY_INTERVAL=0)
        r = hotvcb(site, "-m", "web", "-g", conf)
        deadline = time.monotonic() + 10
        while not server.messages and time.monotonic() < deadline:
            time.sleep(0.1)
        got = [rcpt for m in server.messages for rcpt in m.rcpt_tos]
    assert r.returncode == 0, r.stdout[-1500:]
    if "oncall@example.org" in got:
        return  # both were mailed: nothing claimed that did not happen
    sent = [ln for ln in r.stdout.splitlines() if "e-mail report sent" in ln]
    assert sent, r.stdout[-1500:]
    assert "oncall@example.org" not in sent[0], "log claims a recipient that got nothing: %s (got %s)" % (sent[0], got)
    assert any("oncall@example.org" in ln for ln in (r.stdout + r.stderr).splitlines()
               if "warning" in ln.lower()), r.stdout[-1500:]


# -- 3. VM_STARTUP_ORDER starts the next VM before the one before it has booted -------------------------------
@needs_root
def test_the_startup_order_waits_for_each_vm_to_boot_before_the_next(site):
    """The admin's ghettoVCB.conf shuts the application server down before the database and starts them the
    other way round: `VM_SHUTDOWN_ORDER=app,db`, `VM_STARTUP_ORDER=db,app`, the whole point being that `app`
    starts only once `db` is up. ghettoVCB.sh's powerOn() powers a VM on and then loops on `vim-cmd
    vmsvc/get.guest` while it says toolsNotRunning (60 s a turn, up to POWER_DOWN_TIMEOUT), and only then
    goes on to the next VM of VM_STARTUP_ORDER. config-reference.md keeps the key's meaning ("VMs to power
    on, in order, afterwards"), but hotvcb powers `db` and `app` on within the same second and never asks
    whether db's guest is up: the app server boots against a database that is still starting. Here db's
    guest takes 3 s to boot (VMware Tools report not running until then); app must not be powered on
    before that."""
    site.create_vm("db", "datastore1", [{"size": "1M"}], power="on")
    site.create_vm("app", "datastore1", [{"size": "1M"}], power="on")
    record = site.tmp / "power-on.times"
    record.write_text("")
    # a guest that boots in 3 s: VMware Tools report not running until then
    from simhost import wrap_tool
    wrap_tool(site, "vim-cmd", (
        'case "$1" in\n'
        '  vmsvc/power.on) echo "$2 $(date +%%s)" >> %(rec)s ;;\n'
        '  vmsvc/get.guest)\n'
        '    t=$(grep "^$2 " %(rec)s | tail -1 | cut -d" " -f2); now=$(date +%%s)\n'
        '    if [ -n "$t" ] && [ $((now - t)) -lt 3 ]; then\n'
        '      "$0.real" "$@" | sed "s/toolsOk/toolsNotRunning/; s/guestToolsRunning/guestToolsNotRunning/"; exit 0\n'
        '    fi ;;\n'
        'esac') % {"rec": str(record)})
    conf = write_conf(site, VM_SHUTDOWN_ORDER="app,db", VM_STARTUP_ORDER="db,app")
    r = hotvcb(site, "-m", "web", "-g", conf)
    assert r.returncode == 0, r.stdout[-2000:]
    from simhost import vim
    ids = {line.split()[1]: line.split()[0] for line in vim(site, "vmsvc/getallvms").splitlines()[1:] if line.split()}
    started = {}
    for line in record.read_text().splitlines():
        vmid, when = line.split()
        started[vmid] = int(when)
    assert ids["db"] in started and ids["app"] in started, (record.read_text(), r.stdout[-2000:])
    assert started[ids["app"]] - started[ids["db"]] >= 2, (
        "app powered on %d s after db, whose guest needed 3 s to boot" % (started[ids["app"]] - started[ids["db"]]))


# -- 4. `KEY=value; export KEY`: the shell's command separator becomes part of the backup folder ----------
@needs_root
def test_a_shell_separator_after_the_backup_volume_is_not_made_into_a_folder(site):
    """The admin's ghettoVCB.conf was written in the old Bourne style, `VM_BACKUP_VOLUME=/vmfs/volumes/backup/
    ghetto; export VM_BACKUP_VOLUME`. ghettoVCB `source`d it: /bin/sh assigned /vmfs/volumes/backup/ghetto and
    ran the export, and for years the backups went there. config-reference.md says a value means what
    ghettoVCB's /bin/sh made of it (and warns where it cannot, as for `$VAR`); a value with `;` is "taken
    as written", which it explains by a hook's command line. For the backup volume that means hotvcb
    creates the folder `ghetto; export VM_BACKUP_VOLUME` on the datastore and backs up into it, saying
    nothing: the ghettoVCB backups beside it are no longer rotated, `hotvcb list` with the same config
    shows only the new ones, and a restore script pointed at .../ghetto finds nothing new. It should use
    the path the shell assigned, or refuse/warn naming the line; never invent a folder name with `;`."""
    host = site
    conf = host.tmp / "ghettoVCB.conf"
    conf.write_text("VM_BACKUP_VOLUME=/vmfs/volumes/backup/ghetto; export VM_BACKUP_VOLUME\n"
                    "DISK_BACKUP_FORMAT=thin\nVM_BACKUP_ROTATION_COUNT=3\n")
    os.makedirs(host.real("/vmfs/volumes/backup/ghetto"))
    r = hotvcb(host, "-m", "web", "-g", str(conf))
    made = os.listdir(host.real("/vmfs/volumes/backup"))
    assert not [m for m in made if ";" in m], "folders made on the backup datastore: %r\n%s" % (made, r.stdout[-1500:])
    warned = any("ghettoVCB.conf:1" in ln for ln in (r.stdout + r.stderr).splitlines())
    assert warned or os.listdir(host.real("/vmfs/volumes/backup/ghetto")), r.stdout[-1500:]


# -- 5. ghettoVCB's per-VM file of a VM whose name hostd escapes is not read --------------------------------
@needs_root
@pytest.mark.parametrize("name, filename", [("SAP/DB", "SAP%2fDB"), ("CORP\\DC1", "CORP%5cDC1")],
                         ids=["slash", "backslash"])
def test_ghettovcbs_per_vm_file_of_an_escaped_name_is_read(site, name, filename):
    """`ghettoVCB.sh -a -c vmconf` took each VM's name from `vim-cmd vmsvc/getallvms`, which shows `/` in a
    display name as `%2f` and `\\` as `%5c` (hostd's escapes; backup-format.md: "as getallvms shows the name,
    and the folder ghettoVCB.sh made for it"), and sourced `vmconf/<that name>`: the admin's per-VM file for
    the VM `CORP\\DC1` is `vmconf/CORP%5cDC1`, here with DISK_BACKUP_FORMAT=zeroedthick and a rotation of 1
    (in real life often POWER_VM_DOWN_BEFORE_BACKUP=1 for a database that must be backed up cold). hotvcb
    looks for `vmconf/CORP\\DC1` only, finds nothing and backs the VM up with the global settings, saying
    nothing (for `SAP/DB` it says the VM "cannot have a per-VM file", while ghettoVCB's file for it is
    right there). hotvcb writes these VMs' backup folders with the same escapes, so it can find the
    file by them; at the least it must say that it ignores that file."""
    from test_outsider_s31names import vm_named
    vm_named(site, "escaped", name)
    conf = write_conf(site)
    confdir = site.tmp / "vmconf"
    confdir.mkdir()
    (confdir / filename).write_text("DISK_BACKUP_FORMAT=zeroedthick\nVM_BACKUP_ROTATION_COUNT=1\n")
    r = hotvcb(site, "-m", name, "-g", conf, "-c", str(confdir))
    assert r.returncode == 0, r.stdout[-2000:]
    lines = (r.stdout + r.stderr).splitlines()
    used = any(("CONFIG: %s" % (confdir / filename)) in ln for ln in lines)
    said = any(filename in ln and ("warn" in ln.lower() or "ignor" in ln.lower()) for ln in lines)
    assert used or said, "\n".join(ln for ln in lines if "CONFIG" in ln or "warn" in ln.lower())
