"""cli.main called in a process that lives on (a program using hotvcb as a library, a test): each command's
signal handling is its own, not the process's from then on."""

import signal

from hotvcb import interrupt
from hotvcb.cli import main


def test_a_command_gives_back_the_signal_handlers_it_found_and_forgets_what_it_recorded(tmp_path):
    def mine(signum, frame):
        raise AssertionError("not sent in this test")

    before = signal.signal(signal.SIGTERM, mine)
    found_int = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite was started in the background by a shell
    try:
        interrupt.stop("left by an earlier command")  # as a run whose lock was taken over leaves it
        assert main(["verify", "--volume", str(tmp_path), "--all"]) == 0  # not stopped by the earlier one
        assert signal.getsignal(signal.SIGTERM) is mine, "hotvcb's handler stayed: the program's SIGTERM is lost"
        assert signal.getsignal(signal.SIGINT) is found_int
        assert not interrupt.pending()
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_json_report_that_cannot_have_its_folder_is_refused_before_the_run(tmp_path, capsys):
    """The report monitoring reads: a path under a file, or naming a folder, is a usage error before any VM is
    touched (the run used to end OK and warn after its last line)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    assert main(["backup", "-m", "web", "--json-report", str(blocker / "r.json")]) == 1
    assert "--json-report %s: cannot make its folder" % (blocker / "r.json") in capsys.readouterr().err
    assert main(["backup", "-m", "web", "--json-report", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
