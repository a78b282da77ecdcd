"""Does a run's outcome get mailed? One answer, asked before `notify` is imported (smtplib, ssl
and email cost a run that sends no mail ~0.1 s) and by `notify.send_report` itself."""

from typing import Any


def wanted(settings: Any, failed: bool) -> bool:
    """EMAIL_LOG mails every run, EMAIL_ALERT only runs that did not end all OK; either needs a
    server and a recipient: EMAIL_TO, or for a run that failed EMAIL_ERRORS_TO (ghettoVCB's sendMail
    made it the recipient when EMAIL_TO was empty: a conf that mails on-call only when it matters)."""
    asked = settings.email_log or (settings.email_alert and failed)
    to = tuple(settings.email_to or ()) + (tuple(settings.email_errors_to or ()) if failed else ())
    return bool(asked and settings.email_server and any(a and a.strip() for a in to))
