"""Outsider attacks on what hotvcb prints (runlog.say / say_json), the getallvms row joining and the
umask every command runs under: names with control characters, bidi overrides, wide characters,
bytes that are no UTF-8, and the modes of what a backup, a repo backup and a restore create."""

import json
import os
import stat
import subprocess
import sys
import unicodedata

import pytest

from simhost import REPO, VOLUME, _argv, hotvcb, make_host, needs_root, wrap_tool, write_conf

pytestmark = needs_root
DS1 = "/vmfs/volumes/datastore1"
RAW = ("\x1b", "\x07", "\x9b", "\u2028", "\x00", "\r")


def out(r):
    return r.stdout + r.stderr


def no_traceback(r):
    assert "Traceback" not in out(r), out(r)


def _edit(path, old, new):
    with open(path) as f:
        text = f.read()
    assert old in text, text
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def folder_backup(host, vm, stamp="2026-12-01_10-00-00"):
    os.makedirs(host.real("%s/%s/%s-%s" % (VOLUME, vm, vm, stamp)))


def run_umask(host, mask, *args):
    return subprocess.run(_argv(host, args), capture_output=True, text=True, timeout=85,
                          preexec_fn=lambda: os.umask(mask), env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)


def loose(root):
    """Everything under root writable by group or others: {path: mode}."""
    bad = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            m = stat.S_IMODE(os.lstat(p).st_mode)
            if not stat.S_ISLNK(os.lstat(p).st_mode) and m & 0o022:
                bad[p] = oct(m)
    return bad


def width(s):
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


# --- text output -------------------------------------------------------------------------------------

def test_rtl_override_in_a_name_is_not_printed_raw(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vm = "invoice\u202egpj.exe"
    folder_backup(host, vm)
    r = hotvcb(host, "list", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, out(r)
    assert "\u202e" not in out(r), repr(out(r))


def test_rtl_override_kept_exact_in_list_json(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vm = "invoice\u202egpj.exe"
    folder_backup(host, vm)
    r = hotvcb(host, "list", "-g", conf, "--json")
    assert r.returncode == 0, out(r)
    assert [b["vm"] for b in json.loads(r.stdout)["backups"]] == [vm]


def test_a_folder_name_with_a_line_feed_is_one_row_of_list(tmp_path):
    """A folder under the volume named `x<LF>y`: list must not print it as two lines (a forged row)."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vm = "x\nFAKE  2099-01-01 00:00:00"
    folder_backup(host, vm)
    r = hotvcb(host, "list", "-g", conf)
    no_traceback(r)
    lines = r.stdout.splitlines()
    assert len(lines) <= 2, repr(r.stdout)
    assert not any(l.startswith("FAKE") for l in lines), repr(r.stdout)
    r = hotvcb(host, "list", "-g", conf, "--json")
    assert vm in [b["vm"] for b in json.loads(r.stdout)["backups"]] or r.returncode == 0, out(r)


@pytest.mark.parametrize("vm", ["esc\x1b[31mred", "osc\x1b]0;t\x07x", "cr\rover", "bel\x07x", "ls\u2028x",
                                "c1\x85nel", "tab\tx"])
def test_list_and_status_text_escape_and_json_round_trips(tmp_path, vm):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm(vm, "datastore1", [{"size": "2M"}])
    folder_backup(host, vm)
    for cmd in ("list", "status"):
        r = hotvcb(host, cmd, "-g", conf)
        no_traceback(r)
        assert not [c for c in RAW + ("\x85",) if c in out(r)], repr(out(r))
        r = hotvcb(host, cmd, "-g", conf, "--json")
        assert not [c for c in RAW + ("\x85",) if c in r.stdout], repr(r.stdout)
        data = json.loads(r.stdout)
        names = [b["vm"] for b in data["backups"]] if cmd == "list" else [c.get("name") for c in data["checks"]]
        assert vm in names, (names, r.stdout)


def test_a_folder_name_that_is_no_utf8(tmp_path):
    """A folder whose name is bytes that are no UTF-8 (an NFS share written by another system)."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    base = host.real(VOLUME).encode()
    os.makedirs(base + b"/bad\xff\xfename/bad\xff\xfename-2026-12-01_10-00-00")
    folder_backup(host, "fine")
    r = hotvcb(host, "list", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, out(r)
    assert "fine" in r.stdout and "\ufffd" not in r.stdout, repr(r.stdout)
    assert "\\udcff" in r.stdout or "\\xff" in r.stdout, repr(r.stdout)
    r = hotvcb(host, "list", "-g", conf, "--json")
    no_traceback(r)
    assert r.returncode == 0, out(r)
    r.stdout.encode("utf-8")  # printable as UTF-8
    names = [b["vm"] for b in json.loads(r.stdout)["backups"]]
    assert "fine" in names and len(names) == 2, names
    r = hotvcb(host, "status", "-g", conf)
    no_traceback(r)
    r = hotvcb(host, "status", "-g", conf, "--json")
    no_traceback(r)
    json.loads(r.stdout)


def test_list_columns_stay_aligned_with_a_wide_name(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    folder_backup(host, "\u65e5\u672c\u8a9e\u30b5\u30fc\u30d0")
    folder_backup(host, "web")
    r = hotvcb(host, "list", "-g", conf)
    assert r.returncode == 0, out(r)
    head, *rows = r.stdout.splitlines()
    col = width(head[:head.index("TIME")])
    for row in rows:
        at = row.index("2026-12-01")
        assert width(row[:at]) == col, r.stdout


def test_cli_error_line_escapes_the_argument(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    r = hotvcb(host, "backup", "-m", "no\x1b]0;owned\x07such\x1b[2J", "-g", conf)
    no_traceback(r)
    assert r.returncode != 0, out(r)
    assert not [c for c in RAW if c in out(r)], repr(out(r))
    r = hotvcb(host, "status", "-g", "/nowhere/\x1b[2Jconf\x07")
    no_traceback(r)
    assert r.returncode != 0 and not [c for c in RAW if c in out(r)], repr(out(r))


def test_a_vm_name_with_escapes_is_refused_before_a_snapshot_and_the_line_escaped(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vmid = host.create_vm("plain", "datastore1", [{"size": "2M"}], power="on")
    vmx = host.real("%s/plain/plain.vmx" % DS1)
    text = open(vmx).read().replace('displayName = "plain"', 'displayName = "pl|1B]0;x|07ain"')
    open(vmx, "w").write(text)
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    assert r.returncode != 0 and "All VMs backed up OK" not in out(r), out(r)
    assert not [c for c in RAW if c in out(r)], repr(out(r))
    from simhost import snapshot_names
    assert snapshot_names(host, vmid) == [], out(r)


# --- getallvms rows ------------------------------------------------------------------------------------

def test_an_annotation_whose_lines_start_with_digits_does_not_stop_a_backup_of_that_vm(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on", annotation="owner: ops\n2 disks\n42 [x] y")
    r = hotvcb(host, "backup", "-m", "web", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, out(r)


def test_backup_all_with_an_annotation_row_that_never_reads_is_not_ok(tmp_path):
    """The annotation's `2 disks` line reads as a row of vmid 2 that never reads: -a may not say all is OK,
    and names vmid 2; the real VM is still backed up."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on", annotation="note\n2 disks")
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    assert "All VMs backed up OK" not in out(r) and r.returncode != 0, out(r)
    assert "vmid 2" in out(r), out(r)
    assert os.listdir(host.real(VOLUME + "/web")), out(r)


def test_a_vm_whose_name_is_empty_is_named_by_backup_all(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vmid = host.create_vm("noname", "datastore1", [{"size": "2M"}])
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    vmx = host.real("%s/noname/noname.vmx" % DS1)
    text = open(vmx).read().replace('displayName = "noname"', 'displayName = ""')
    open(vmx, "w").write(text)
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    assert "All VMs backed up OK" not in out(r) and r.returncode != 0, out(r)
    assert "vmid %s" % vmid in out(r), out(r)


def test_a_vm_whose_name_is_only_a_line_feed(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vmid = host.create_vm("lfonly", "datastore1", [{"size": "2M"}])
    host.create_vm("web", "datastore1", [{"size": "2M"}])
    vmx = host.real("%s/lfonly/lfonly.vmx" % DS1)
    text = open(vmx).read().replace('displayName = "lfonly"', 'displayName = "|0A"')
    open(vmx, "w").write(text)
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    assert "All VMs backed up OK" not in out(r) and r.returncode != 0, out(r)
    assert "vmid %s" % vmid in out(r) or "'\\n'" in out(r), out(r)
    assert os.listdir(host.real(VOLUME + "/web")), out(r)
    r = hotvcb(host, "status", "-g", conf)
    assert r.returncode != 0, out(r)


# --- umask -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o000, 0o002])
def test_backup_under_a_loose_umask_creates_nothing_group_writable(tmp_path, mask):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    r = run_umask(host, mask, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work", "-l",
                  VOLUME + "/logs/run.log")
    assert r.returncode == 0, out(r)
    bad = loose(host.real(VOLUME))
    bad.update({k: v for k, v in loose(host.store.p("root", "run", "upper")).items()})
    bad.update(loose(str(tmp_path / "work")))
    assert not bad, bad


def test_repo_backup_and_restore_under_umask_000_create_nothing_group_writable(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    repo = "/vmfs/volumes/backup/repo"
    r = run_umask(host, 0, "backup", "-m", "web", "-g", conf, "--repo", repo, "-w", tmp_path / "work")
    assert r.returncode == 0, out(r)
    r = run_umask(host, 0, "restore", "--repo", repo, "--latest", "web", "--to", DS1 + "/restored")
    assert r.returncode == 0, out(r)
    bad = loose(host.real(repo))
    bad.update(loose(host.real(DS1 + "/restored")))
    bad.update(loose(str(tmp_path / "work")))
    assert not bad, bad


def test_a_stricter_umask_stays(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    r = run_umask(host, 0o077, "backup", "-m", "web", "-g", conf, "-w", tmp_path / "work")
    assert r.returncode == 0, out(r)
    root = host.real(VOLUME + "/web")
    modes = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            modes[os.path.join(d, n)] = stat.S_IMODE(os.lstat(os.path.join(d, n)).st_mode)
    assert modes and not [p for p, m in modes.items() if m & 0o077], {p: oct(m) for p, m in modes.items()}


# --- more names ----------------------------------------------------------------------------------------

def test_status_escapes_a_registered_vm_name_holding_a_line_feed(tmp_path):
    """A registered VM `a<LF>CRIT forged`: status text must show it on one line (a monitor parses lines)."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("lfvm", "datastore1", [{"size": "2M"}])
    vmx = host.real("%s/lfvm/lfvm.vmx" % DS1)
    _edit(vmx, 'displayName = "lfvm"', 'displayName = "a|0AOK forged"')
    r = hotvcb(host, "status", "-g", conf)
    no_traceback(r)
    assert not [l for l in out(r).splitlines() if l.startswith("OK forged")], out(r)
    r = hotvcb(host, "status", "-g", conf, "--json")
    json.loads(r.stdout)


def test_a_datastore_name_with_escapes_is_escaped_by_status(tmp_path):
    host = make_host(tmp_path / "host")
    host.add_datastore("ds\x1b]0;owned\x07\x1b[2J", 1 << 30, vmfs=6)
    conf = write_conf(host)
    r = hotvcb(host, "status", "-g", conf)
    no_traceback(r)
    assert not [c for c in RAW if c in out(r)], repr(out(r))
    assert "ds\\x1b]0;owned" in out(r), out(r)
    r = hotvcb(host, "status", "-g", conf, "--json")
    assert not [c for c in RAW if c in r.stdout], repr(r.stdout)
    assert "ds\x1b]0;owned\x07\x1b[2J" in [c.get("name") for c in json.loads(r.stdout)["checks"]], r.stdout


def test_a_tab_in_a_name_keeps_list_columns_aligned(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    folder_backup(host, "a\tb")
    folder_backup(host, "web")
    r = hotvcb(host, "list", "-g", conf)
    assert r.returncode == 0, out(r)
    head, *rows = r.stdout.splitlines()
    col = len(head[:head.index("TIME")].expandtabs())
    assert [len(row[:row.index("2026-12-01")].expandtabs()) for row in rows] == [col] * len(rows), r.stdout


def test_list_json_gives_back_a_name_that_is_no_utf8_as_its_surrogate_escape(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    base = host.real(VOLUME).encode()
    os.makedirs(base + b"/n\xffx/n\xffx-2026-12-01_10-00-00")
    r = hotvcb(host, "list", "-g", conf, "--json")
    assert r.returncode == 0, out(r)
    (name,) = [b["vm"] for b in json.loads(r.stdout)["backups"]]
    assert os.fsencode(name) == b"n\xffx", repr(name)


def test_an_annotation_line_starting_with_another_vms_vmid_costs_it_nothing_in_backup_all(tmp_path):
    """a's annotation has lines that start with b's vmid but read as no row ("2 disks attached", half a
    row): b is backed up by `-a` like every VM, and the run is all OK."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("a", "datastore1", [{"size": "2M"}], power="on")
    b = host.create_vm("b", "datastore1", [{"size": "2M"}], power="on")
    note = "note|0A%s disks attached|0A%s|09[datastore1] x" % (b, b)
    open(host.real("%s/a/a.vmx" % DS1), "a").write('annotation = "%s"\n' % note)
    assert "\n%s disks attached\n" % b in __import__("simhost").vim(host, "vmsvc/getallvms")
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0 and "All VMs backed up OK" in out(r), out(r)
    assert os.listdir(host.real(VOLUME + "/a")) and os.listdir(host.real(VOLUME + "/b")), out(r)


@pytest.mark.parametrize("how", ["-m", "-f", "-e"])
def test_a_row_that_never_reads_with_m_f_e(tmp_path, how):
    """vmid 2's row never reads (an annotation's `2 disks` line). -m web / -f [web] back up only web: OK;
    -e other backs up all but `other`: the unread row must keep it from saying all is OK."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on", annotation="note\n2 disks")
    if how == "-m":
        args = ["-m", "web"]
    elif how == "-f":
        lst = host.real("/vmlist")
        open(lst, "w").write("web\n")
        args = ["-f", "/vmlist"]
    else:
        lst = host.real("/exclude")
        open(lst, "w").write("other\n")
        args = ["-a", "-e", "/exclude"]
    r = hotvcb(host, "backup", *args, "-g", conf)
    no_traceback(r)
    assert os.listdir(host.real(VOLUME + "/web")), out(r)
    if how == "-e":
        assert r.returncode != 0 and "All VMs backed up OK" not in out(r) and "vmid 2" in out(r), out(r)
    else:
        assert r.returncode == 0, out(r)


def test_backup_files_under_umask_000_exist_and_are_checked(tmp_path):
    """The loose-umask test is only worth something if the files it looks at exist: STATUS, manifest, log."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    r = run_umask(host, 0, "backup", "-m", "web", "-g", conf, "-l", VOLUME + "/logs/run.log")
    assert r.returncode == 0, out(r)
    names = []
    for d, dirs, files in os.walk(host.real(VOLUME)):
        names += files
    assert "hotvcb.json" in names and "STATUS.ok" in names and "run.log" in names, names
    assert not loose(host.real(VOLUME)), loose(host.real(VOLUME))


def test_an_unrecognized_argument_is_escaped_in_the_error_line():
    r = subprocess.run([sys.executable, "-m", "hotvcb", "backup", "-a", "--x\x1b]0;owned\x07\x1b[2J"],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO)
    assert r.returncode != 0 and "Traceback" not in out(r), out(r)
    assert "unrecognized" in out(r) and not [c for c in RAW if c in out(r)], repr(out(r))


def test_verify_escapes_a_folder_name(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    vm = "v\x1b]0;owned\x07\x1b[2J\u2028"
    folder_backup(host, vm)
    r = hotvcb(host, "verify", "-g", conf)
    no_traceback(r)
    assert not [c for c in RAW if c in out(r)], repr(out(r))
    r = hotvcb(host, "verify", "-g", conf, vm)
    no_traceback(r)
    assert not [c for c in RAW if c in out(r)], repr(out(r))


def test_repo_list_verify_prune_escape_a_vm_name_and_json_round_trips(tmp_path):
    import repotool
    name = "w\x1b]0;owned\x07\x1b[2J\u2028x\x85"
    repo = repotool.new_repo(tmp_path / "repo")
    disk = tmp_path / "disk.raw"
    repotool.make_disk(str(disk), size=2 << 20)
    repotool.backup(repo, name, disk)
    env = dict(os.environ, PYTHONPATH=REPO)
    for args in (["list"], ["verify"], ["prune", "--keep-last", "1"]):
        r = subprocess.run([sys.executable, "-m", "hotvcb"] + args + ["--repo", str(tmp_path / "repo")],
                           capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
        assert r.returncode == 0, out(r)
        assert not [c for c in RAW + ("\x85",) if c in out(r)], (args, repr(out(r)))
    r = subprocess.run([sys.executable, "-m", "hotvcb", "list", "--json", "--repo", str(tmp_path / "repo")],
                       capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert not [c for c in RAW + ("\x85",) if c in r.stdout], repr(r.stdout)
    assert [b["vm"] for b in json.loads(r.stdout)["backups"]] == [name], r.stdout


def test_an_annotation_forging_another_vms_row_does_not_hide_it_from_backup_all(tmp_path):
    """VM a's annotation holds a line that reads as a whole getallvms row for vmid 2 (VM b's), naming a's
    own .vmx: `backup -a` must still back up b, or say it did not."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("a", "datastore1", [{"size": "2M"}], power="on")
    host.create_vm("b", "datastore1", [{"size": "2M"}], power="on")
    ids = sorted(l.split()[0] for l in __import__("simhost").vim(host, "vmsvc/getallvms").splitlines()[1:])
    forged = "note\n%s   a   [datastore1] a/a.vmx   centos7_64Guest   vmx-19   x" % ids[1]
    vmx = host.real("%s/a/a.vmx" % DS1)
    open(vmx, "a").write('annotation = "%s"\n' % forged.replace("\n", "|0A"))
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    b_done = os.path.isdir(host.real(VOLUME + "/b")) and os.listdir(host.real(VOLUME + "/b"))
    assert b_done or (r.returncode != 0 and "All VMs backed up OK" not in out(r)), out(r)


def test_an_annotation_forging_a_row_does_not_stop_the_backup_of_its_own_vm(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("a", "datastore1", [{"size": "2M"}], power="on")
    host.create_vm("b", "datastore1", [{"size": "2M"}], power="on")
    ids = sorted(l.split()[0] for l in __import__("simhost").vim(host, "vmsvc/getallvms").splitlines()[1:])
    forged = "note|0A%s   a   [datastore1] a/a.vmx   centos7_64Guest   vmx-19   x" % ids[1]
    vmx = host.real("%s/a/a.vmx" % DS1)
    open(vmx, "a").write('annotation = "%s"\n' % forged)
    r = hotvcb(host, "backup", "-m", "a", "-g", conf)
    no_traceback(r)
    assert r.returncode == 0, out(r)


def _forge(host, vm, vmid, name, vmx):
    """VM `vm`'s annotation: a line, then a whole getallvms row for `vmid` as hostd would print it."""
    row = "note|0A%s   %s   [datastore1] %s   centos7_64Guest   vmx-19   x" % (vmid, name, vmx)
    open(host.real("%s/%s/%s.vmx" % (DS1, vm, vm)), "a").write('annotation = "%s"\n' % row)


def _snapshots_created(host, tmp_path):
    """The vmids hotvcb asks vim-cmd to snapshot, logged by a wrapper in front of the host's vim-cmd."""
    calls = str(tmp_path / "snapshot-calls")
    wrap_tool(host, "vim-cmd", '[ "$1" = vmsvc/snapshot.create ] && echo "$2" >> %s' % calls)
    return lambda: open(calls).read().split() if os.path.exists(calls) else []


def test_a_row_forged_after_the_genuine_one_does_not_stop_its_vm(tmp_path):
    """b's annotation forges a row for a's vmid naming b: the row after a's genuine one. b is backed up,
    snapshotted by its own vmid only; a, whose vmid the forgery disputes, is named, never another's."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    a = host.create_vm("a", "datastore1", [{"size": "2M"}], power="on")
    b = host.create_vm("b", "datastore1", [{"size": "2M"}], power="on")
    _forge(host, "b", a, "b", "b/b.vmx")
    created = _snapshots_created(host, tmp_path)
    r = hotvcb(host, "backup", "-m", "b", "-g", conf)
    assert r.returncode == 0, out(r)
    assert created() == [b], out(r)
    r = hotvcb(host, "backup", "-a", "-g", conf)
    assert r.returncode != 0 and "All VMs backed up OK" not in out(r) and "vmid %s" % a in out(r), out(r)
    assert created() == [b, b], out(r)


def test_a_forged_row_of_a_vmid_not_otherwise_listed_is_refused_not_snapshotted(tmp_path):
    """a's annotation forges a row of vmid 99 naming a's own .vmx: one .vmx on two vmids, one of them not
    hostd's, which the listing cannot tell. a is refused, naming both; nothing is snapshotted."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    a = host.create_vm("a", "datastore1", [{"size": "2M"}], power="on")
    _forge(host, "a", "99", "a", "a/a.vmx")
    created = _snapshots_created(host, tmp_path)
    r = hotvcb(host, "backup", "-m", "a", "-g", conf)
    no_traceback(r)
    assert r.returncode != 0 and "vmids %s, 99" % a in out(r), out(r)
    assert created() == [], out(r)


def test_two_vms_named_alike_stay_refused_when_a_forged_row_disputes_one(tmp_path):
    """Two real VMs are named a; a forged row in the first's annotation disputes the second's vmid. The
    second's row cannot be told from the forged one, but it still names a VM a: `-m a` is refused."""
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("a", "datastore1", [{"size": "2M"}], power="on")
    other = host.create_vm("a2", "datastore1", [{"size": "2M"}], power="on")
    _edit(host.real("%s/a2/a2.vmx" % DS1), 'displayName = "a2"', 'displayName = "a"')
    _forge(host, "a", other, "a", "a/a.vmx")
    created = _snapshots_created(host, tmp_path)
    r = hotvcb(host, "backup", "-m", "a", "-g", conf)
    no_traceback(r)
    assert r.returncode != 0 and "vmid %s" % other in out(r), out(r)
    assert created() == [], out(r)


@pytest.mark.parametrize("by_file", [False, True])
def test_an_ssh_backup_whose_sessions_get_umask_000_creates_nothing_group_writable(host, tmp_path, by_file):
    """The host's sshd gives sessions umask 000 (pam_umask, a forced command): over SSH, with the on-host
    build and file by file, the backup, its log and the host's run files stay not writable by others."""
    import shutil as _shutil
    from sshd import running_sshd
    from sshsite import Site
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").symlink_to(_shutil.which("ssh"))
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    conf = write_conf(host)
    with running_sshd(tmp_path / "sshd", force_command='umask 000; eval "$SSH_ORIGINAL_COMMAND"',
                      wrap=[sys.executable, "-m", "esxisim", "shell", host.root, "--"],
                      env=dict(os.environ, PYTHONPATH=REPO)) as sshd:
        site = Site(host, sshd, bindir, tmp_path)
        r, _ = site.run("backup", *(["--file-by-file"] if by_file else []), "-m", "web", "-g", conf,
                        "-l", tmp_path / "logs" / "run.log")
    assert r.returncode == 0, r.out
    names = [n for _d, _s, files in os.walk(host.real(VOLUME)) for n in files]
    assert "hotvcb.json" in names and "STATUS.ok" in names, names
    bad = loose(host.real(VOLUME))
    bad.update(loose(host.store.p("root", "run", "upper")))
    bad.update(loose(str(tmp_path / "logs")))
    assert not bad, bad


def test_folder_restore_and_cleanup_under_umask_000_create_nothing_group_writable(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    r = run_umask(host, 0, "backup", "-m", "web", "-g", conf)
    assert r.returncode == 0, out(r)
    r = run_umask(host, 0, "restore", "--latest", "web", "-g", conf, "--datastore", "ds5", "--name", "web2",
                  "--format", "thin")
    assert r.returncode == 0, out(r)
    restored = host.real("/vmfs/volumes/ds5/web2")
    assert os.listdir(restored), out(r)
    r = run_umask(host, 0, "cleanup", "-g", conf)
    no_traceback(r)
    bad = loose(restored)
    bad.update(loose(host.real(VOLUME)))
    bad.update(loose(host.store.p("root", "run", "upper")))
    assert not bad, bad


def _summary(text):
    lines = [l.split(" -- info: ", 1)[1] for l in text.splitlines() if " -- info: " in l]
    start = [i for i, l in enumerate(lines) if l.startswith("VM  ") and "RESULT" in l][-1]
    return lines[start:start + 3]


def test_backup_summary_table_stays_aligned_with_a_refused_escape_name(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("plain", "datastore1", [{"size": "2M"}], power="on")
    host.create_vm("web", "datastore1", [{"size": "2M"}], power="on")
    vmx = host.real("%s/plain/plain.vmx" % DS1)
    _edit(vmx, 'displayName = "plain"', 'displayName = "pl|1B[2J|1B[1mxx"')
    r = hotvcb(host, "backup", "-a", "-g", conf)
    no_traceback(r)
    table = _summary(r.stdout)
    assert len(table) == 3 and not [c for c in RAW if c in r.stdout], r.stdout
    import re
    cols = {re.search(r"  +(RESULT|ERROR|OK|FAILED|SKIPPED|REFUSED)\b", l).start(1) for l in table}
    assert len(cols) == 1, "\n".join(table)


def test_backup_summary_table_stays_aligned_with_a_wide_name(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm("\u65e5\u672c\u8a9e", "datastore1", [{"size": "2M"}], power="on")
    host.create_vm("webserver", "datastore1", [{"size": "2M"}], power="on")
    r = hotvcb(host, "backup", "-a", "-g", conf)
    assert r.returncode == 0, out(r)
    table = _summary(r.stdout)
    cols = {width(l[:l.index("OK") if "OK" in l else l.index("RESULT")]) for l in table}
    assert len(cols) == 1, "\n".join(table)
