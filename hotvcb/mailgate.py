"""Does a run's outcome get mailed? One answer, asked before `notify` is imported (smtplib, ssl
and email cost a run that sends no mail ~0.1 s) and by `notify.send_report` itself."""

from typing import Any


def wanted(settings: Any, failed: bool) -> bool:
    """EMAIL_LOG mails every run, EMAIL_ALERT only runs that did not end all OK; either needs a
    server and a recipient."""
    asked = settings.email_log or (settings.email_alert and failed)
    return bool(asked and settings.email_server and any(a and a.strip() for a in settings.email_to or ()))
