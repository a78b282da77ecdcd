"""Outside test of stop 26's changes, round 2: a command run from a thread of a program (cli.main as a
library), odd leftovers' names in SSH mode's build folder on the host, and what `status` names as the
newest good backup of a .gz and its unpacked twin. All in-process on tmp folders (milliseconds each)."""

import os
import threading

from test_outsider_s26 import gz_pair, status_of_db

from hotvcb import onhost_boot


def test_a_command_run_from_a_thread_of_a_program_runs(tmp_path, capsys):
    """Only the main thread may set signal handlers: a program calling cli.main from a worker thread (a
    web console's job, a scheduler's) got 'internal error: ValueError: signal only works in main thread'
    and exit 1 from every command that stops on a signal (backup, restore, verify, cleanup, prune), before
    it did anything."""
    from hotvcb.cli import main

    folder = gz_pair(tmp_path / "vol", "good")
    codes = []
    worker = threading.Thread(target=lambda: codes.append(main(["verify", str(folder)])))
    worker.start()
    worker.join()
    assert codes == [0], capsys.readouterr()


def test_a_leftover_name_with_a_pid_no_process_can_have_neither_stays_nor_ends_the_run(tmp_path):
    """`hotvcb-X.<pid>.tmp` with a number past any pid made os.kill raise OverflowError, and a name with a
    non-ASCII digit (str.isdigit takes '²') made int() raise ValueError, in the `finally` that ends every
    on-host run: each run's result was replaced by a Python traceback (or 'error: on the host'), exit 1,
    for as long as the name stayed."""
    cache = tmp_path / "cache"
    cache.mkdir()
    beyond, superscript = cache / "hotvcb-x.4294967296.tmp", cache / "hotvcb-y.\u00b2.tmp"
    for leftover in (beyond, superscript):
        leftover.mkdir()
    onhost_boot.forget_old_builds(str(cache), ())
    assert os.listdir(str(cache)) == [superscript.name]  # not a name we write: not ours to remove


def test_status_names_the_good_twin_as_the_newest_good_backup_and_its_size_as_list_does(tmp_path):
    """With the .gz cut and the folder unpacked beside it good, status (OK, 1 kept) named the cut .gz as
    `newest_good`, the path a script then restores (and fails on), and gave the .gz's size alone where
    list gives the pair's."""
    from hotvcb.commands.list_cmd import backup_rows
    from hotvcb.localshell import LocalShell

    vol = tmp_path / "vol"
    folder = gz_pair(vol, "cut")
    check = status_of_db(vol)
    assert check.details["newest_good"] == str(folder), check
    assert check.details["size_bytes"] == backup_rows(LocalShell(), str(vol), "db")[0]["size_bytes"], check


def test_the_run_report_counts_a_gz_and_its_unpacked_twin_once(tmp_path):
    """The e-mail and --json-report of a backup run (good_backups, newest_good) listed the pair as two
    backups to restore from, where list, status and rotation count one."""
    from types import SimpleNamespace

    from hotvcb.jobs.backup import BackupJob
    from hotvcb.localshell import LocalShell
    from hotvcb.settings import Settings

    vol = tmp_path / "vol"
    folder = gz_pair(vol, "good")
    shell = LocalShell()
    job = SimpleNamespace(host=SimpleNamespace(shell=shell, host_name=lambda: "esx1"), log=None)
    assert BackupJob._good_backups(job, "db", Settings(vm_backup_volume=str(vol)), "", shell) == [str(folder) + ".gz"]
