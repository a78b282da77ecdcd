"""Config and list files as ghettoVCB users really have them, and as they go wrong."""

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from hotvcb.adminfile import MAX_FILE_BYTES, read_text
from hotvcb.config import dry_run_refused, for_vm, load_settings
from hotvcb.confkeys import KEYS
from hotvcb.errors import ConfigError, HotvcbError, UsageError
from hotvcb.namelist import excluding_nothing, fitted, read_names
from hotvcb.settings import Settings

try:
    from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
except ImportError:  # hypothesis is a test extra; its absence is a reported skip below
    given = None

GHETTO = Path(__file__).resolve().parent / "data" / "ghettovcb-files"
TEMPLATE = GHETTO / "ghettoVCB-vm_backup_configuration_template"


def conf(tmp_path, text, name="ghettoVCB.conf", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def load(tmp_path, text, **kw):
    return load_settings(conf(tmp_path, text, **kw))


# --- the real files -------------------------------------------------------


def test_real_ghettovcb_conf():
    path = str(GHETTO / "ghettoVCB.conf")
    s, warnings = load_settings(path)
    assert warnings == []
    assert s.vm_backup_volume == "/vmfs/volumes/dlgCore-NFS-bigboi.VM-Backups/WILLIAM_BACKUPS"
    assert s.disk_backup_format == "thin"
    assert s.vm_backup_rotation_count == 3
    assert (s.iter_to_wait_shutdown, s.power_down_timeout, s.snapshot_timeout) == (3, 5, 15)
    assert not any(
        (
            s.power_vm_down_before_backup,
            s.enable_hard_power_off,
            s.enable_compression,
            s.vm_snapshot_memory,
            s.vm_snapshot_quiesce,
            s.allow_vms_with_snapshots_to_be_backedup,
            s.enable_non_persistent_nfs,
            s.unmount_nfs,
            s.email_alert,
            s.email_log,
            s.workdir_debug,
        )
    )
    assert (s.nfs_server, s.nfs_version, s.nfs_mount) == ("172.30.0.195", "nfs", "/nfsshare")
    assert (s.nfs_local_name, s.nfs_vm_backup_dir) == ("nfs_storage_backup", "mybackups")
    assert (s.email_server, s.email_server_port, s.email_delay_interval) == ("auroa.primp-industries.com", 25, 1)
    assert (s.email_user_name, s.email_user_password) == ("", "")
    assert s.email_from == "root@ghettoVCB"
    assert s.email_to == ("auroa@primp-industries.com",)
    assert s.email_errors_to == s.vm_shutdown_order == s.vm_startup_order == ()
    assert s.vmdk_files_to_backup == ("all",)
    assert s.where("vm_backup_volume") == path + ":1"
    assert s.where("vm_startup_order") == path + ":32"
    assert s.where("email_tls") == "default"


def test_real_per_vm_template(tmp_path):
    glob, _ = load_settings(str(GHETTO / "ghettoVCB.conf"))
    shutil.copy(str(TEMPLATE), str(tmp_path / "VCAP"))
    s, warnings = for_vm(glob, str(tmp_path), "VCAP")
    assert warnings == []
    assert s.iter_to_wait_shutdown == 4
    assert s.vmdk_files_to_backup == ("VCAP.vmdk", "VCAP_2.vmdk")
    assert s.where("vmdk_files_to_backup") == str(tmp_path / "VCAP") + ":12"
    assert s.email_to == glob.email_to  # not in the per-VM file: the global value stays
    assert s.where("email_to").endswith("ghettoVCB.conf:27")


def test_every_key_is_a_settings_field_and_back():
    fields = {f.name for f in dataclasses.fields(Settings)} - {"origin", "per_vm_file"}  # where values came from
    assert {key.lower() for key in KEYS} == fields


def test_no_global_file_means_base():
    base = Settings(vm_backup_rotation_count=9)
    assert load_settings(None, base) == (base, [])


# --- syntax ---------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("NFS_SERVER=nas01", "nas01"),
        ('NFS_SERVER="nas01"', "nas01"),
        ("NFS_SERVER='nas01'", "nas01"),
        ("  NFS_SERVER=nas01  ", "nas01"),
        ("\tNFS_SERVER=nas01\t", "nas01"),
        ("export NFS_SERVER=nas01", "nas01"),
        ("NFS_SERVER=nas01 # the big one", "nas01"),
        ("NFS_SERVER=nas01\t# tab before comment", "nas01"),
        ('NFS_SERVER="nas 01" # comment', "nas 01"),
        ("NFS_SERVER='nas#01'", "nas#01"),
        ("NFS_SERVER=nas#01", "nas#01"),  # no blank before '#': the shell keeps it too
        ('NFS_SERVER="a \\"b\\" c"', 'a "b" c'),
        ("NFS_SERVER='a \"b\" c'", 'a "b" c'),
        ('NFS_SERVER="nas"01', "nas01"),  # one shell word: its parts joined, as the shell assigned it
        ("NFS_SERVER='a b'\\ \"c\"", "a b c"),
        ("NFS_SERVER='a\\b'", "a\\b"),
        ("NFS_SERVER=#nas", "#nas"),  # '#' inside a word, not after a blank: not a comment
        ("NFS_SERVER=a=b", "a=b"),
        ("NFS_SERVER=", ""),
        ('NFS_SERVER=""', ""),
        ("NFS_SERVER=m\u00fcller-nas", "m\u00fcller-nas"),
    ],
)
def test_value_syntax(tmp_path, line, expected):
    s, warnings = load(tmp_path, "# header\n\n" + line + "\n")
    assert s.nfs_server == expected
    assert s.where("nfs_server").endswith(":3")
    assert warnings == []


def test_crlf_and_bom(tmp_path):
    text = "\ufeff# saved on Windows\r\nVM_BACKUP_VOLUME=/vmfs/volumes/ds1/bk\r\nEMAIL_TO=\"a@x, b@y\"\r\n"
    s, warnings = load(tmp_path, text)
    assert s.vm_backup_volume == "/vmfs/volumes/ds1/bk"
    assert s.email_to == ("a@x", "b@y")
    assert s.where("email_to").endswith(":3")
    assert warnings == []


def test_two_files_saved_with_a_bom_each_and_joined_with_cat(tmp_path):
    """`cat a.conf b.conf`: the second file's BOM starts a later line, and is no part of its key."""
    text = "\ufeff# a\r\nVM_BACKUP_VOLUME=/vmfs/volumes/ds1/bk\r\n\ufeffEMAIL_TO=a@x\r\n"
    s, warnings = load(tmp_path, text)
    assert s.vm_backup_volume == "/vmfs/volumes/ds1/bk"
    assert s.email_to == ("a@x",)
    assert warnings == []


def test_latin1_file_is_read_with_a_warning(tmp_path):
    s, warnings = load(tmp_path, "NFS_LOCAL_NAME=M\u00fcller\n", encoding="latin-1")
    assert s.nfs_local_name == "M\u00fcller"
    assert len(warnings) == 1 and "not valid UTF-8" in warnings[0]


@pytest.mark.parametrize(
    "line, field, expected",
    [
        ("ENABLE_COMPRESSION=1", "enable_compression", True),
        ("ENABLE_COMPRESSION=yes", "enable_compression", True),
        ("ENABLE_COMPRESSION=TRUE", "enable_compression", True),
        ("ENABLE_COMPRESSION=No", "enable_compression", False),
        ("ENABLE_COMPRESSION=false", "enable_compression", False),
        ("EMAIL_SERVER_PORT=587", "email_server_port", 587),
        ("EMAIL_SERVER_PORT=65535", "email_server_port", 65535),
        ("EMAIL_DELAY_INTERVAL=0", "email_delay_interval", 0),
        ("DISK_BACKUP_FORMAT=EagerZeroedThick", "disk_backup_format", "eagerzeroedthick"),
        ("DISK_BACKUP_FORMAT=2gbsparse", "disk_backup_format", "2gbsparse"),
        ("BACKUP_FILES_CHMOD=600", "backup_files_chmod", "600"),
        ("BACKUP_FILES_CHMOD=0640", "backup_files_chmod", "0640"),
        ("BACKUP_FILES_CHMOD=00640", "backup_files_chmod", "00640"),  # chmod takes any count of digits
        ("BACKUP_FILES_CHMOD=", "backup_files_chmod", ""),
        ("BACKUP_FILES_CHMOD=go-rwx", "backup_files_chmod", "go-rwx"),  # ghettoVCB's chmod -R took it
        ("BACKUP_FILES_CHMOD=u=rw,go=", "backup_files_chmod", "u=rw,go="),
        ("NFS_VERSION=nfs41", "nfs_version", "nfsv41"),
        ("NFS_VERSION=nfsv41", "nfs_version", "nfsv41"),
        ("EMAIL_TLS=starttls", "email_tls", "starttls"),
        ("VM_SHUTDOWN_ORDER=db, app ,,web [old]", "vm_shutdown_order", ("db", "app", "web [old]")),
        ("VMDK_FILES_TO_BACKUP=all", "vmdk_files_to_backup", ("all",)),
        ("VMDK_FILES_TO_BACKUP=", "vmdk_files_to_backup", ("all",)),
        ("VMDK_FILES_TO_BACKUP=a.vmdk, b.vmdk", "vmdk_files_to_backup", ("a.vmdk", "b.vmdk")),
        ("SNAPSHOT_REMOVE_TIMEOUT=90", "snapshot_remove_timeout", 90),
        ("SNAPSHOT_TIMEOUT=90s", "snapshot_timeout", 1.5),
        ("POWER_DOWN_TIMEOUT=2m", "power_down_timeout", 2),
        ("EMAIL_ALERT=1", "email_alert", True),
    ],
)
def test_typed_values(tmp_path, line, field, expected):
    s, _ = load(tmp_path, line + "\n")
    assert getattr(s, field) == expected


def test_thick_is_zeroedthick_with_a_notice(tmp_path):
    s, warnings = load(tmp_path, "DISK_BACKUP_FORMAT=thick\n")
    assert s.disk_backup_format == "zeroedthick"
    assert len(warnings) == 1 and ":1: DISK_BACKUP_FORMAT: thick" in warnings[0]


def test_shell_expansion_is_taken_literally_with_a_warning(tmp_path):
    s, warnings = load(tmp_path, 'EMAIL_USER_PASSWORD="pa$word`x`"\nEMAIL_FROM=\'root@$HOST\'\n')
    assert s.email_user_password == "pa$word`x`"
    assert s.email_from == "root@$HOST"
    assert len(warnings) == 1 and ":1: EMAIL_USER_PASSWORD" in warnings[0]


def test_a_backslash_the_shell_drops_before_a_letter_is_warned_about(tmp_path):
    """`DOMAIN\\user` written for hotvcb alone meant the backslash; the shell (and so hotvcb) drops it."""
    s, warnings = load(tmp_path, "EMAIL_USER_NAME=CORP\\backup\nEMAIL_USER_PASSWORD='CORP\\pw'\n")
    assert (s.email_user_name, s.email_user_password) == ("CORPbackup", "CORP\\pw")
    assert len(warnings) == 1 and ":1: EMAIL_USER_NAME: a backslash before a character the shell gives no meaning to" in warnings[0]


def test_unknown_keys_warn_with_file_line_and_a_guess(tmp_path):
    path = conf(tmp_path, "VM_BACKUP_ROTATION_COUNT=2\nBACKUP_WINDOW=10\nvm_backup_volume=/x\nNFS_BACKUP_DELAYS=1\n")
    s, warnings = load_settings(path)
    assert s.vm_backup_rotation_count == 2
    assert warnings[0] == "%s:2: unknown key BACKUP_WINDOW ignored" % path
    assert warnings[1] == "%s:3: unknown key vm_backup_volume ignored (did you mean VM_BACKUP_VOLUME?)" % path
    # a typo of one of ghettoVCB's own keys is steered to that key, not to a look-alike of hotvcb's
    assert warnings[2] == "%s:4: unknown key NFS_BACKUP_DELAYS ignored (did you mean NFS_BACKUP_DELAY?)" % path
    assert s.vm_backup_volume == Settings().vm_backup_volume


def test_ghettovcb_keys_hotvcb_does_not_take_are_named_as_such_with_what_replaces_them(tmp_path):
    """ghettoVCB.sh's own keys are no typos: each is named as ghettoVCB's, with why hotvcb ignores it, and never
    gets a "did you mean" of a hotvcb key (NFS_BACKUP_DELAY=0 renamed to NFS_VM_BACKUP_DIR=0 would put every
    backup in a folder "0")."""
    from hotvcb import ghettokeys

    path = conf(tmp_path, "".join("%s=0\n" % key for key in ghettokeys.IGNORED))
    s, warnings = load_settings(path)
    assert len(warnings) == len(ghettokeys.IGNORED)
    for number, (key, warning) in enumerate(zip(ghettokeys.IGNORED, warnings), 1):
        assert warning.startswith("%s:%d: %s is a ghettoVCB key hotvcb does not use, ignored: " % (path, number, key))
        assert "did you mean" not in warning
    assert "<VM>-<YYYY-MM-DD_HH-MM-SS>" in warnings[0]
    assert s == Settings(origin=s.origin)


@pytest.mark.parametrize("option,key,level", [
    ("info", "dryrun", "dryrun"), ("dryrun", "info", "dryrun"), ("debug", "dryrun", "dryrun"),
    ("info", "debug", "debug"), ("debug", "info", "debug"), ("info", "", "info"), ("dryrun", "", "dryrun")])
def test_log_level_in_the_config_counts_as_ghettovcb_sourced_it_over_d(tmp_path, option, key, level):
    """ghettoVCB sourced -g after its options, so LOG_LEVEL=dryrun in a test config made every run a dry run
    (hotvcb ignored it and backed up for real); a -d dryrun is never made a real run by the file."""
    from hotvcb.config import run_level

    s, warnings = load_settings(conf(tmp_path, "LOG_LEVEL=%s\n" % key))
    assert warnings == [] and s.log_level == key
    assert run_level(option, s) == level


def test_empty_mail_numbers_mean_their_defaults_and_log_level_is_run_wide(tmp_path):
    """`EMAIL_SERVER_PORT=` (ghettoVCB configs have empty values; its shell read them as unset) stopped every
    run, mail on or off; LOG_LEVEL=debug in a per-VM file would do nothing, so it is said; LOG_LEVEL=dryrun
    there (ghettoVCB dry-ran that VM) is kept, and refuses the VM's turn in a real run (config.dry_run_refused)."""
    s, warnings = load_settings(conf(tmp_path, "EMAIL_SERVER_PORT=\nEMAIL_DELAY_INTERVAL=''\n"))
    assert (s.email_server_port, s.email_delay_interval, warnings) == (25, 1, [])
    confdir = tmp_path / "vms"
    confdir.mkdir()
    (confdir / "web").write_text("LOG_LEVEL=debug\n")
    vm, said = for_vm(s, str(confdir), "web")
    assert vm.log_level == "" and "applies to the whole run" in said[0]
    (confdir / "web").write_text("LOG_LEVEL='DryRun'\n")
    vm, said = for_vm(s, str(confdir), "web")
    assert (vm.log_level, said) == ("dryrun", [])
    assert "web:1: LOG_LEVEL=dryrun" in dry_run_refused(vm, False) and dry_run_refused(vm, True) == ""


def test_a_key_set_twice_takes_the_later_line_and_warns(tmp_path):
    path = conf(tmp_path, "SNAPSHOT_TIMEOUT=10\nSNAPSHOT_TIMEOUT=20\n")
    s, warnings = load_settings(path)
    assert s.snapshot_timeout == 20 and s.where("snapshot_timeout") == path + ":2"
    assert warnings == ["%s:2: SNAPSHOT_TIMEOUT was already set on line 1; this line wins" % path]


# --- bad values -----------------------------------------------------------

BAD = [
    ("VM_BACKUP_ROTATION_COUNT", "0", "deleted the backup it had just made"),
    ("VM_BACKUP_ROTATION_COUNT", "-1", "from 1 to 999999999"),
    ("VM_BACKUP_ROTATION_COUNT", "three", "from 1 to 999999999"),
    ("VM_BACKUP_ROTATION_COUNT", "", "from 1 to 999999999"),
    ("ITER_TO_WAIT_SHUTDOWN", "0", "minutes >= 1"),
    ("POWER_DOWN_TIMEOUT", "0", "minutes >= 1"),
    ("SNAPSHOT_TIMEOUT", "0", "minutes >= 1"),
    ("SNAPSHOT_TIMEOUT", "1.5", "minutes >= 1"),
    ("SNAPSHOT_TIMEOUT", "9" * 5000, "minutes >= 1"),
    ("SNAPSHOT_TIMEOUT", "\u00b2", "minutes >= 1"),
    ("SNAPSHOT_REMOVE_TIMEOUT", "0", "minutes >= 1"),
    ("SNAPSHOT_TIMEOUT", "0s", "seconds with an s suffix"),
    ("SNAPSHOT_TIMEOUT", "5h", "seconds with an s suffix"),
    ("EMAIL_DELAY_INTERVAL", "-3", "from 0 to"),
    ("EMAIL_SERVER_PORT", "0", "from 1 to 65535"),
    ("EMAIL_SERVER_PORT", "65536", "from 1 to 65535"),
    ("ENABLE_COMPRESSION", "2", "0 or 1"),
    ("ENABLE_COMPRESSION", "on", "0 or 1"),
    ("ENABLE_COMPRESSION", "", "0 or 1"),
    ("DISK_BACKUP_FORMAT", "vhdx", "zeroedthick|eagerzeroedthick|thin|2gbsparse|qcow2|raw|thick"),
    ("NFS_VERSION", "nfs4", "nfs|nfsv41|nfs41"),
    ("EMAIL_TLS", "ssl", "none|starttls|smtps|auto"),
    ("BACKUP_FILES_CHMOD", "rw-r--r--", "octal"),
    ("BACKUP_FILES_CHMOD", "0800", "octal"),
    ("BACKUP_FILES_CHMOD", "10000", "octal"),  # over 07777: chmod refuses it too (7 is 0007, taken)
    ("BACKUP_FILES_CHMOD", "go-rwq", "symbolic one as chmod takes it"),
    ("BACKUP_FILES_CHMOD", "u+rw,,", "octal"),
    ("VM_BACKUP_VOLUME", "", "absolute path"),
    ("VM_BACKUP_VOLUME", "backups", "absolute path"),
    ("VMDK_FILES_TO_BACKUP", "all,a.vmdk", "all, or a comma list"),
]


@pytest.mark.parametrize("key, value, allowed", BAD)
def test_bad_value_names_file_line_key_value_allowed(tmp_path, key, value, allowed):
    path = conf(tmp_path, "# ok\nDISK_BACKUP_FORMAT=thin\n%s=%s\n" % (key, value))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    err = info.value
    assert (err.path, err.line, err.key) == (path, 3, key)
    message = str(err)
    assert message.startswith("%s:3: %s=" % (path, key))
    assert repr(value if len(value) <= 80 else value[:77] + "...") in message
    assert allowed in message
    assert len(message) < 400


@pytest.mark.parametrize(
    "line, key",
    [
        ("VM_BACKUP_VOLUME = /vmfs/volumes/x", "line"),
        ("just some words", "line"),
        ("1KEY=x", "line"),
        ("K\u00c9Y=x", "line"),
        ('NFS_SERVER="nas01', "NFS_SERVER"),
        ("NFS_SERVER='nas01", "NFS_SERVER"),
        ('NFS_SERVER="nas" 01', "NFS_SERVER"),
        ("NFS_SERVER=a\x00b", "NFS_SERVER"),
        ("NFS_SERVER=a\x1bb", "NFS_SERVER"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, key):
    path = conf(tmp_path, "NFS_VERSION=nfs\n" + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert (info.value.line, info.value.key) == (2, key)
    assert str(info.value).startswith(path + ":2: ")


def test_passwords_stay_out_of_error_messages(tmp_path):
    for text in ('EMAIL_USER_PASSWORD="s3cret\x07"\n', "EMAIL_USER_PASSWORD = s3cret\n", "EMAIL_USER_PASSWORD='s3cret\n"):
        with pytest.raises(ConfigError) as info:
            load(tmp_path, text)
        assert "s3cret" not in str(info.value)


# --- files that are not config files ---------------------------------------


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no-such.conf"):
        load_settings(str(tmp_path / "no-such.conf"))


def test_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not a regular file"):
        load_settings(str(tmp_path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(str(tmp_path / "fifo"))
    with pytest.raises(UsageError, match="not a regular file"):
        load_settings(str(tmp_path / "fifo"))


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX file modes")
def test_unreadable_file_is_a_usage_error(tmp_path):
    if os.geteuid() != 0:
        path = conf(tmp_path, "NFS_VERSION=nfs\n")
        os.chmod(path, 0)
        with pytest.raises(UsageError, match="cannot read"):
            load_settings(path)
        return
    # root reads everything: ask as user nobody, through the CLI, in a folder that user can reach
    # (a copy of the package, since a clone under /root is closed to other users)
    import pwd
    import subprocess
    import sys
    import tempfile
    nobody = pwd.getpwnam("nobody")
    top = tempfile.mkdtemp(prefix="hotvcb-unreadable-")
    try:
        os.chmod(top, 0o755)
        shutil.copytree(str(Path(__file__).resolve().parents[1] / "hotvcb"), os.path.join(top, "hotvcb"))
        path = conf(Path(top), "NFS_VERSION=nfs\n")
        os.chmod(path, 0)

        def drop():
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

        def runs(python):
            try:
                return subprocess.run([python, "-c", ""], preexec_fn=drop, cwd=top, timeout=60).returncode == 0
            except OSError:
                return False
        python = next((p for p in (sys.executable, "/usr/bin/python3") if runs(p)), None)
        if python is None:
            pytest.skip("running as root and no Python interpreter that user nobody may run")
        r = subprocess.run([python, "-m", "hotvcb", "backup", "-m", "vm", "-g", path, "-w",
                            os.path.join(top, "w")], capture_output=True, text=True, cwd=top, timeout=60,
                           env=dict(os.environ, PYTHONPATH=top), preexec_fn=drop)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "cannot read config file %s: Permission denied" % path in r.stderr
    finally:
        shutil.rmtree(top)


def test_huge_file_is_refused(tmp_path):
    path = conf(tmp_path, b"#" * (MAX_FILE_BYTES + 1))
    with pytest.raises(UsageError, match="larger than"):
        load_settings(path)


def test_one_megabyte_line_is_a_clean_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "x" * 1000000 + "\n")
    assert len(str(info.value)) < 300


def test_random_bytes_are_a_clean_error(tmp_path):
    data = bytes(range(256)) * 64
    with pytest.raises(HotvcbError):
        load(tmp_path, data)


if given is not None:

    @given(data=st.binary(max_size=2000) | st.text(max_size=400).map(lambda t: t.encode("utf-8")))
    @hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_fuzz_only_hotvcb_errors(tmp_path, data):
        path = conf(tmp_path, data)
        try:
            s, warnings = load_settings(path)
        except HotvcbError:
            return
        assert isinstance(s, Settings) and all(isinstance(w, str) for w in warnings)

    _LINE_PARTS = st.sampled_from(sorted(KEYS) + ["export ", "=", '"', "'", "#", " ", "\t", "\r", "\n", "$", "\\"])

    @given(parts=st.lists(_LINE_PARTS | st.text(max_size=8), max_size=30))
    @hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_fuzz_config_shaped_text(tmp_path, parts):
        try:
            load(tmp_path, "".join(parts))
        except HotvcbError:
            pass

    @given(data=st.binary(max_size=2000))
    @hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_fuzz_name_lists(tmp_path, data):
        path = conf(tmp_path, data, name="list")
        try:
            names = read_names(path)
        except HotvcbError:
            return
        assert len(names) == len({n.exact for n in names}) and all(n == n.strip(" \t\r") and n for n in names)

else:

    def test_fuzz_config_and_name_lists():
        pytest.skip("hypothesis is not installed: the config and name-list fuzz tests did not run "
                    "(scripts/install-test-deps installs it)")


# --- per-VM files -----------------------------------------------------------


ODD_NAMES = [
    "web 01",
    "  two  spaces  inside",
    "M\u00fcller-DB",
    "db [old] (2)",
    "a+b*c;d",
    "it's \"quoted\"",
    "#hash-first",
    "\u65e5\u672c\u8a9e",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_per_vm_file_for_odd_names(tmp_path, name):
    path = tmp_path / name
    path.write_text("VM_BACKUP_ROTATION_COUNT=7\n", encoding="utf-8")
    s, warnings = for_vm(Settings(), str(tmp_path), name)
    assert s.vm_backup_rotation_count == 7 and warnings == []
    assert s.where("vm_backup_rotation_count") == str(path) + ":1"


def test_names_are_literal_file_names_not_patterns(tmp_path):
    (tmp_path / "web*").write_text("VM_BACKUP_ROTATION_COUNT=7\n")
    (tmp_path / "web01").write_text("VM_BACKUP_ROTATION_COUNT=8\n")
    assert for_vm(Settings(), str(tmp_path), "web0")[0].vm_backup_rotation_count == 3
    assert for_vm(Settings(), str(tmp_path), "WEB01")[0].vm_backup_rotation_count == 3
    assert for_vm(Settings(), str(tmp_path), "web*")[0].vm_backup_rotation_count == 7


def test_no_leakage_between_vms(tmp_path):
    glob, _ = load(tmp_path, "VM_BACKUP_ROTATION_COUNT=5\nDISK_BACKUP_FORMAT=thin\n")
    confdir = tmp_path / "vms"
    confdir.mkdir()
    (confdir / "alpha").write_text("DISK_BACKUP_FORMAT=eagerzeroedthick\nENABLE_COMPRESSION=1\n")
    (confdir / "beta").write_text("VM_BACKUP_ROTATION_COUNT=1\n")
    alpha, _ = for_vm(glob, str(confdir), "alpha")
    beta, _ = for_vm(glob, str(confdir), "beta")
    gamma, _ = for_vm(glob, str(confdir), "gamma")
    assert (alpha.disk_backup_format, alpha.enable_compression, alpha.vm_backup_rotation_count) == (
        "eagerzeroedthick",
        True,
        5,
    )
    assert (beta.disk_backup_format, beta.enable_compression, beta.vm_backup_rotation_count) == ("thin", False, 1)
    assert gamma is glob
    assert beta.where("disk_backup_format").endswith("ghettoVCB.conf:2")


def test_no_confdir_or_missing_file_keeps_global(tmp_path):
    glob = Settings(snapshot_timeout=44)
    assert for_vm(glob, None, "web01") == (glob, [])
    assert for_vm(glob, str(tmp_path), "web01") == (glob, [])


def test_confdir_that_is_not_a_directory(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        for_vm(Settings(), str(tmp_path / "nope"), "web01")


@pytest.mark.parametrize("name", ["", ".", "..", "a\x00b"])
def test_names_that_cannot_be_file_names(tmp_path, name):
    (tmp_path / "etc").mkdir()
    glob = Settings()
    s, warnings = for_vm(glob, str(tmp_path / "etc"), name)
    assert s is glob and len(warnings) == 1


@pytest.mark.parametrize("name, filename", [("a/b", "a%2fb"), ("../etc", "..%2fetc"), ("C\\D", "C%5cD"),
                                            ("50%/x", "50%25%2fx")])
def test_per_vm_file_named_as_getallvms_shows_the_name(tmp_path, name, filename):
    """ghettoVCB sourced `<confdir>/<name as getallvms shows it>`: hostd writes % / \\ as %25 %2f %5c."""
    (tmp_path / "etc").mkdir()
    glob = Settings()
    assert for_vm(glob, str(tmp_path / "etc"), name) == (glob, [])  # no file: normal, nothing to say
    (tmp_path / "etc" / filename).write_text("VM_BACKUP_ROTATION_COUNT=7\n")
    s, warnings = for_vm(glob, str(tmp_path / "etc"), name)
    assert s.vm_backup_rotation_count == 7 and s.per_vm_file.endswith(filename) and warnings == []


def test_per_vm_file_of_the_vms_own_name_wins_over_its_escaped_name(tmp_path):
    (tmp_path / "C\\D").write_text("VM_BACKUP_ROTATION_COUNT=2\n")
    (tmp_path / "C%5cD").write_text("VM_BACKUP_ROTATION_COUNT=9\n")
    s, warnings = for_vm(Settings(), str(tmp_path), "C\\D")
    assert s.vm_backup_rotation_count == 2
    assert len(warnings) == 1 and warnings[0].startswith("%s ignored: " % (tmp_path / "C%5cD")), warnings


def test_a_semicolon_ends_a_value_as_in_the_shell(tmp_path):
    """`KEY=value; export KEY` (old Bourne style): the shell assigned `value`; what it ran after the `;` is
    warned about unless it only exported; a hook's command line keeps its `;`."""
    path = conf(tmp_path, "VM_BACKUP_VOLUME=/vmfs/volumes/b/ghetto; export VM_BACKUP_VOLUME\n"
                          "NFS_SERVER=nas ;export NFS_SERVER NFS_MOUNT # the share\n"
                          "NFS_MOUNT='/ex port';touch /tmp/x\n"
                          "PRE_BACKUP_HOOK=/opt/pre.sh; logger done\n")
    s, warnings = load_settings(path)
    assert (s.vm_backup_volume, s.nfs_server, s.nfs_mount) == ("/vmfs/volumes/b/ghetto", "nas", "/ex port")
    assert s.pre_backup_hook == "/opt/pre.sh; logger done"
    assert len(warnings) == 1 and warnings[0].startswith("%s:3: NFS_MOUNT: " % path), warnings
    assert "touch /tmp/x" in warnings[0]


def test_what_follows_a_passwords_semicolon_is_not_shown(tmp_path):
    """`EMAIL_USER_PASSWORD=abc;def`: the shell assigned abc and ran def; the warning, which the mailed log
    holds, must not show the rest of what the admin may have meant as the password."""
    s, warnings = load(tmp_path, "EMAIL_USER_PASSWORD=abc;def\n")
    assert s.email_user_password == "abc"
    assert len(warnings) == 1 and "def" not in warnings[0] and "***" in warnings[0], warnings


def test_email_addresses_are_separated_by_commas_and_semicolons(tmp_path):
    s, _ = load(tmp_path, 'EMAIL_TO="a@x;b@y, c@z"\nEMAIL_ERRORS_TO="Ops <o@x>;"\n')
    assert s.email_to == ("a@x", "b@y", "c@z") and s.email_errors_to == ("Ops <o@x>",)


def test_per_vm_name_that_is_a_directory_is_a_usage_error(tmp_path):
    (tmp_path / "web01").mkdir()
    with pytest.raises(UsageError):
        for_vm(Settings(), str(tmp_path), "web01")


def test_run_wide_keys_in_per_vm_file_warn_and_are_ignored(tmp_path):
    path = tmp_path / "web01"
    path.write_text("EMAIL_TO=x@y\nNFS_SERVER=nas\nENABLE_COMPRESSION=1\n")
    s, warnings = for_vm(Settings(), str(tmp_path), "web01")
    assert s.email_to == () and s.nfs_server == "" and s.enable_compression
    assert [w.split(": ")[0] for w in warnings] == ["%s:1" % path, "%s:2" % path]


def test_bad_value_in_per_vm_file_names_that_file(tmp_path):
    (tmp_path / "web 01").write_text("\n\nVM_BACKUP_ROTATION_COUNT=0\n")
    with pytest.raises(ConfigError) as info:
        for_vm(Settings(), str(tmp_path), "web 01")
    assert str(info.value).startswith(str(tmp_path / "web 01") + ":3: VM_BACKUP_ROTATION_COUNT='0'")


# --- -f / -e list files -----------------------------------------------------


def test_list_file_with_odd_names(tmp_path):
    text = (
        "\ufeff# VMs to back up\r\n"
        "web 01\r\n"
        "\r\n"
        "   # indented comment\n"
        "  db [old] (2)  \n"
        "a+b*c;d\n"
        "it's \"quoted\"\n"
        "M\u00fcller-DB\t\n"
        "web#2\n"
        "web 01\n"
        "Web 01\n"
    )
    path = conf(tmp_path, text, name="vms.list")
    assert read_names(path) == ["web 01", "db [old] (2)", "a+b*c;d", "it's \"quoted\"", "M\u00fcller-DB", "web#2", "Web 01"]


def test_a_list_line_names_the_vm_with_its_very_blanks_before_the_stripped_name(tmp_path):
    """VMs `db` and `db ` on one host: the line `db ` is `db `, never silently the other; where no VM has the
    line's blanks, they are the editor's and the line is `db`. `-m` names (no list line) stay literal."""
    names = read_names(conf(tmp_path, "db \r\ndb\nweb \n", name="vms.list"))
    assert names == ["db", "db", "web"]
    assert fitted(names, ["db", "db ", "web"]) == ["db ", "db", "web"]
    assert fitted(names, ["db", "web"]) == ["db", "web"]
    assert fitted(["db "], ["db"]) == ["db "]
    assert excluding_nothing(names[:1], ["db ", "web"]) == []


def test_list_file_in_latin1(tmp_path):
    path = conf(tmp_path, "M\u00fcller-DB\n", name="vms.list", encoding="latin-1")
    assert read_names(path) == ["M\u00fcller-DB"]


def test_a_latin1_line_in_a_utf8_list_file_is_that_line_only(tmp_path):
    """A comment appended in Latin-1 to a UTF-8 list: the UTF-8 names keep their umlauts (decoding the
    whole file as Latin-1 would make "M\u00fcller-DB" a name no VM has), the Latin-1 line is read so too,
    and the warning names that line."""
    data = "M\u00fcller-DB\n".encode("utf-8") + "# f\u00fcr M\u00fcller\n".encode("latin-1") + \
        "G\u00e4ste\n".encode("latin-1")
    path = conf(tmp_path, data, name="vms.list")
    assert read_names(path) == ["M\u00fcller-DB", "G\u00e4ste"]
    _text, warnings = read_text(path, "VM list file")
    assert len(warnings) == 1 and "lines 2, 3" in warnings[0] and "not valid UTF-8" in warnings[0], warnings


def test_list_file_missing_names_it(tmp_path):
    with pytest.raises(UsageError, match="vms.list"):
        read_names(str(tmp_path / "vms.list"))


def test_list_file_with_control_characters(tmp_path):
    path = conf(tmp_path, "ok\nbad\x00name\n", name="vms.list")
    with pytest.raises(UsageError, match=r"vms.list:2"):
        read_names(path)


def test_empty_list_file(tmp_path):
    assert read_names(conf(tmp_path, "# nothing yet\n\n", name="vms.list")) == []


def test_exclude_entries_naming_no_vm_are_warned_about():
    """An -e entry naming no VM leaves nothing out: said with -f's "did you mean", and for a line
    ghettoVCB's `grep -E "^${VM_NAME}"` matched, naming the VM ghettoVCB left out (hotvcb backs it up)."""
    present = ["web", "mail", "web-old"]
    assert excluding_nothing(["web", "mail"], present) == []
    (typo, prefix) = excluding_nothing(["WEB", "mail (Exchange, 2 TB)"], present)
    assert "'WEB'" in typo and "did you mean 'web'" in typo
    assert "'mail (Exchange, 2 TB)'" in prefix and "ghettoVCB left out 'mail'" in prefix and "backs 'mail' up" in prefix
    (both,) = excluding_nothing(["web-old-2"], present)
    assert "ghettoVCB left out 'web-old' and 'web'" in both, both
    (far,) = excluding_nothing(["zzz"], present)
    assert far.endswith("so it leaves no VM out"), far


def test_a_backup_run_refuses_a_list_naming_no_vm(tmp_path, capsys):
    """As `schedule install` does, before any host is asked: a run backing up nothing by design
    (exit 7, "No VMs backed up") every night is a mistake, not a result."""
    from hotvcb import cli

    path = conf(tmp_path, "# web01\n# db01\n", name="vms.list")
    argv = ["-f", path, "-g", conf(tmp_path, "VM_BACKUP_VOLUME=/vmfs/volumes/bk\n"), "-w", str(tmp_path / "w")]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out  # the run's log: its final status, and its mail where EMAIL_ALERT asks for one
    assert "error: the VM list %s names no VM" % path in out and "Initiate backup" not in out, out
