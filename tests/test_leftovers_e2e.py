"""Debts from the last stop's closing note, each through the CLI: the mail gate decided in one place."""

from simhost import hotvcb, make_host, needs_root, write_conf

pytestmark = needs_root


def test_mail_alert_imports_the_mailer_only_for_a_run_it_mails(tmp_path, monkeypatch):
    """EMAIL_ALERT=1 mails only runs that did not end OK; an OK run must not pay for smtplib, ssl and
    email (~0.1 s), and a failed one must still be mailed (here: the relay refuses, which is logged)."""
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    host = make_host(tmp_path / "host")
    try:
        host.create_vm("vm", "datastore1", [{"size": "4M"}], power="on")
        conf = write_conf(host, EMAIL_ALERT=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=1, EMAIL_TLS="none",
                          EMAIL_TO="admin@example.com")
        ok = hotvcb(host, "-m", "vm", "-g", conf, "-w", tmp_path / "w")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "hotvcb.notify" not in ok.stderr and "e-mail" not in ok.stdout, ok.stdout + ok.stderr
        failed = hotvcb(host, "-m", "Gone VM", "-g", conf, "-w", tmp_path / "w")
        assert failed.returncode != 0, failed.stdout + failed.stderr
        assert "hotvcb.notify" in failed.stderr and "e-mail report not sent" in failed.stdout, failed.stdout
    finally:
        host.stop()
