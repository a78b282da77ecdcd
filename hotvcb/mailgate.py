"""Does a run's outcome get mailed? One answer, asked before `notify` is imported (smtplib, ssl
and email cost a run that sends no mail ~0.1 s) and by `notify.send_report` itself; and, as the run
starts, why mail the config asks for cannot be sent."""

from typing import Any, Sequence


def wanted(settings: Any, failed: bool) -> bool:
    """EMAIL_LOG mails every run, EMAIL_ALERT only runs that did not end all OK; either needs a
    server and a recipient: EMAIL_TO, or for a run that failed EMAIL_ERRORS_TO (ghettoVCB's sendMail
    made it the recipient when EMAIL_TO was empty: a conf that mails on-call only when it matters)."""
    asked = settings.email_log or (settings.email_alert and failed)
    to = tuple(settings.email_to or ()) + (tuple(settings.email_errors_to or ()) if failed else ())
    return bool(asked and settings.email_server and _named(to))


def unsendable(settings: Any) -> str:
    """Why mail that EMAIL_LOG or EMAIL_ALERT asks for will not be sent, or "": a relay or recipient left
    blank in ghettoVCB's template. ghettoVCB tried and logged its failure; `wanted` just says no, so
    without this warning the admin waits for mails that never come, failed runs' alerts among them."""
    asked = " and ".join(key + "=1" for key, on in (("EMAIL_LOG", settings.email_log),
                                                    ("EMAIL_ALERT", settings.email_alert)) if on)
    if not asked:
        return ""
    if not settings.email_server:
        return "%s asks for mail, but EMAIL_SERVER is empty: no mail will be sent" % asked
    if not _named(settings.email_to) and not _named(settings.email_errors_to):
        return "%s asks for mail, but EMAIL_TO and EMAIL_ERRORS_TO name no recipient: no mail will be sent" % asked
    if settings.email_log and not _named(settings.email_to):
        return ("EMAIL_LOG=1 asks for mail of every run, but EMAIL_TO is empty: only failed runs are mailed "
                "(to EMAIL_ERRORS_TO)")
    return ""


def _named(addresses: Sequence[str]) -> bool:
    return any(a and a.strip() for a in addresses or ())
