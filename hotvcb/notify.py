"""E-mail the run's report and log to the admin (ghettoVCB's EMAIL_* keys).

Mail is a courtesy, not part of the backup: a backup that worked must not be
reported as failed because the mail relay was down. So ``send_report`` never
raises; every problem becomes one warning line in the log and a ``False``.

What ghettoVCB users bring, and what we do with it:

* EMAIL_LOG=1 mails the whole log after every run (ghettoVCB's behaviour);
  the short report goes first so the outcome is visible without scrolling.
  EMAIL_ALERT=1 on its own mails only runs that did not end all OK, for
  admins who want silence on good nights (hotvcb's meaning: ghettoVCB's
  sendMail mailed every run for EMAIL_ALERT=1 as for EMAIL_LOG=1, a mail
  of its final status without the log).
* EMAIL_TO always, EMAIL_ERRORS_TO in addition (as Cc) when the run failed;
  with EMAIL_TO empty, a failed run goes to EMAIL_ERRORS_TO alone (as ghettoVCB did).
* EMAIL_FROM, or ``hotvcb@<host>`` when unset.
* EMAIL_USER_NAME / EMAIL_USER_PASSWORD: SMTP AUTH via ``smtplib.login``
  (CRAM-MD5, PLAIN or LOGIN, whatever the server offers).
* EMAIL_DELAY_INTERVAL: ghettoVCB slept that long between protocol lines
  because it talked SMTP through ``nc``. smtplib waits for each reply
  anyway, so we honour it only as one pause before connecting (capped at
  MAX_DELAY so it stays a bounded wait).
* EMAIL_TLS (hotvcb; ghettoVCB had no STARTTLS at all):

  ========  ==============================================================
  smtps     TLS from the first byte (``SMTP_SSL``, usually port 465)
  starttls  STARTTLS required; a server that does not offer it is an error
  auto      SMTPS on port 465, else STARTTLS when offered, else plain
  none      plain text, never TLS
  ========  ==============================================================

  Credentials never cross an unencrypted connection unless EMAIL_TLS=none
  says so explicitly (then with a warning): under ``auto`` a server without
  STARTTLS would otherwise learn to downgrade us into leaking the password.
  Nor do they cross a session whose certificate did not verify.

  ``auto`` is opportunistic TLS (RFC 7435): with no login to protect, a
  certificate that does not verify (an internal relay's own CA, as Exchange
  and Postfix come) still gives an encrypted, unauthenticated session, with
  a warning, rather than no mail -- ghettoVCB sent the same mail in plain
  text. ``starttls`` and ``smtps`` always insist on a verified certificate.

Server certificates are verified against the system CA store. The
environment variable ``HOTVCB_SMTP_CAFILE`` names a PEM file of extra CAs to
trust instead -- for an internal CA or a self-signed relay (and the tests).

Stdlib only; must run on ESXi's Python 3.8.
"""

import logging
import os
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any, List, Optional, Sequence, Tuple

from . import mailgate
from .runlog import shown

CAFILE_ENV = "HOTVCB_SMTP_CAFILE"
TIMEOUT = 30.0  # seconds per connect / reply; a dead relay must not hang the run
MAX_DELAY = 60  # seconds; cap for EMAIL_DELAY_INTERVAL
TLS_MODES = ("none", "starttls", "smtps", "auto")
SMTPS_PORT = 465

_log = logging.getLogger("hotvcb.notify")


class _MailError(Exception):
    """A problem already phrased for the admin; stays inside this module."""


@dataclass(frozen=True)
class Mail:
    """What a run's report mail says: the run's host and job, its final status line, whether it failed (which
    decides who gets it), the report as text (and HTML) and the log. One value for sending and building it."""

    host: str
    job: str
    status_line: str
    failed: bool
    log_text: str
    report_text: str
    report_html: Optional[str] = None


def send_report(settings: Any, mail: Mail, logger: Optional[Any] = None) -> bool:
    """Mail the report if the config asks for it; True only if a server took it.

    Returns False (having logged why) when mail is off or could not be sent,
    so the caller can mention it without having to handle any exception.
    """
    log = logger if logger is not None else _log
    if not mailgate.wanted(settings, mail.failed):
        return False
    where = "%s:%s" % (settings.email_server, settings.email_server_port)
    try:
        msg = build_message(settings, mail)
        rcpts = recipients(settings, mail.failed)
        delay = min(max(int(settings.email_delay_interval or 0), 0), MAX_DELAY)
        if delay:
            time.sleep(delay)
        refused = _deliver(settings, msg, rcpts, log)
    except _MailError as err:
        log.warning("e-mail report not sent via %s: %s" % (where, err))
        return False
    except smtplib.SMTPAuthenticationError as err:
        log.warning("e-mail report not sent: %s refused login for user %r: %s"
                    % (where, settings.email_user_name, _reply(err)))
        return False
    except smtplib.SMTPRecipientsRefused as err:
        log.warning("e-mail report not sent: %s refused every recipient: %s"
                    % (where, _refusals(err.recipients)))
        return False
    except smtplib.SMTPResponseException as err:
        log.warning("e-mail report not sent: %s answered %s" % (where, _reply(err)))
        return False
    except ssl.SSLError as err:  # before OSError: SSLError is one
        log.warning("e-mail report not sent: TLS with %s failed: %s" % (where, err))
        return False
    except smtplib.SMTPException as err:
        log.warning("e-mail report not sent via %s: %s" % (where, err or type(err).__name__))
        return False
    except (OSError, EOFError) as err:
        log.warning("e-mail report not sent: cannot talk to %s: %s" % (where, err or type(err).__name__))
        return False
    except Exception as err:  # the backup must not die of a mail bug either
        log.warning("e-mail report not sent via %s: unexpected %s: %s"
                    % (where, type(err).__name__, err))
        return False
    if refused:
        log.warning("e-mail report: %s refused some recipients: %s" % (where, _refusals(refused)))
    taken = [r for r in rcpts if (parseaddr(r)[1] or r) not in refused]
    log.info("e-mail report sent via %s to %s" % (where, ", ".join(taken)))
    return True


def recipients(settings: Any, failed: bool) -> List[str]:
    """EMAIL_TO, plus EMAIL_ERRORS_TO on failure, each address once."""
    wanted = list(_clean(settings.email_to))
    if failed:
        wanted += _clean(settings.email_errors_to)
    seen = []  # type: List[str]
    for addr in wanted:
        if addr.lower() not in (s.lower() for s in seen):
            seen.append(addr)
    return seen


def build_message(settings: Any, mail: Mail) -> EmailMessage:
    """The report as a MIME message; separate from sending so it can be checked."""
    host = mail.host or "localhost"
    msg = EmailMessage()
    # A fixed prefix and the status verbatim, so an admin's mail filter can
    # sort OK runs from failed ones; one line whatever a name in it holds (a header with a line break
    # is refused by `email`, and the mail with it: the admin who relies on it heard nothing)
    msg["Subject"] = shown("hotvcb %s %s: %s" % (host, mail.job, mail.status_line), field=True)
    msg["From"] = settings.email_from or "hotvcb@%s" % host
    rcpts = recipients(settings, mail.failed)
    to = _clean(settings.email_to) or rcpts
    msg["To"] = ", ".join(to)
    extra = [a for a in rcpts if a not in to]
    if extra:
        msg["Cc"] = ", ".join(extra)
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid("hotvcb", domain=_msgid_domain(host))
    body = "%s\n\n---- full log ----\n%s" % (mail.report_text.rstrip("\n"), mail.log_text)
    if not body.endswith("\n"):
        body += "\n"
    # 8bit bodies need the server's 8BITMIME, which smtplib does not check;
    # quoted-printable gets VM names with umlauts through any relay.
    cte = None if _plain_ascii(body) else "quoted-printable"
    msg.set_content(body, charset="utf-8", cte=cte)
    if mail.report_html:
        # readable in any client: the table as HTML, the text (with the log) as the alternative
        msg.add_alternative(mail.report_html, subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def _deliver(settings: Any, msg: EmailMessage, rcpts: Sequence[str], log: Any) -> dict:
    """Connect, secure, log in, send; returns the recipients the server refused."""
    mode = settings.email_tls or "auto"
    if mode not in TLS_MODES:
        raise _MailError("EMAIL_TLS=%r is not one of %s" % (mode, "|".join(TLS_MODES)))
    smtp, encrypted = _connect(settings, mode, log)
    try:
        if settings.email_user_name:
            if not encrypted:
                if mode != "none":
                    raise _MailError(
                        "connection is not encrypted (server offers no STARTTLS); refusing "
                        "to send the password in clear text -- set EMAIL_TLS=none to allow it")
                log.warning("e-mail: sending SMTP password for %r unencrypted (EMAIL_TLS=none)"
                            % settings.email_user_name)
            smtp.login(settings.email_user_name, settings.email_user_password or "")
        # The envelope wants bare addresses; EMAIL_FROM may be "Name <addr>".
        sender = parseaddr(msg["From"])[1] or msg["From"]
        return smtp.send_message(msg, from_addr=sender,
                                 to_addrs=[parseaddr(r)[1] or r for r in rcpts])
    finally:
        try:
            smtp.quit()
        except Exception:  # the server may already have hung up
            smtp.close()


def _connect(settings: Any, mode: str, log: Any) -> Tuple[smtplib.SMTP, bool]:
    """An open session after EHLO, and whether it is encrypted (by a certificate that verified, or
    opportunistically under `auto` with no login to protect: see the module's docstring)."""
    try:
        return _session(settings, mode, _tls_context() if mode != "none" else None)
    except ssl.SSLCertVerificationError as err:
        if mode != "auto" or settings.email_user_name:
            raise
        log.warning("e-mail: the certificate of %s:%s does not verify (%s); sending encrypted all the same, "
                    "unauthenticated (EMAIL_TLS=auto and no login to protect) -- trust its CA with %s, or "
                    "EMAIL_TLS=starttls to insist on it" % (settings.email_server, settings.email_server_port,
                                                            err.verify_message or err, CAFILE_ENV))
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    return _session(settings, mode, unverified)


def _session(settings: Any, mode: str, context: Optional[ssl.SSLContext]) -> Tuple[smtplib.SMTP, bool]:
    server, port = settings.email_server, int(settings.email_server_port)
    # smtplib's default EHLO name comes from socket.getfqdn(), a DNS lookup
    # that our timeout does not bound; the plain host name is enough.
    me = socket.gethostname() or "localhost"
    if mode == "smtps" or (mode == "auto" and port == SMTPS_PORT):
        return smtplib.SMTP_SSL(server, port, local_hostname=me, timeout=TIMEOUT,
                                context=context), True
    smtp = smtplib.SMTP(server, port, local_hostname=me, timeout=TIMEOUT)
    try:
        smtp.ehlo_or_helo_if_needed()
        if mode in ("starttls", "auto") and smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()  # capabilities (AUTH) may differ after TLS
            return smtp, True
        if mode == "starttls":
            raise _MailError("EMAIL_TLS=starttls but the server does not offer STARTTLS")
        return smtp, False
    except BaseException:
        smtp.close()
        raise


def _tls_context() -> ssl.SSLContext:
    cafile = os.environ.get(CAFILE_ENV) or None
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ValueError) as err:
        raise _MailError("cannot use %s=%s: %s" % (CAFILE_ENV, cafile, err)) from err


def _clean(addrs: Sequence[str]) -> List[str]:
    return [a.strip() for a in (addrs or ()) if a and a.strip()]


def _plain_ascii(text: str) -> bool:
    return text.isascii()


def _msgid_domain(host: str) -> str:
    safe = "".join(c for c in host if c.isascii() and (c.isalnum() or c in ".-"))
    return safe or "localhost"


def _reply(err: smtplib.SMTPResponseException) -> str:
    text = err.smtp_error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "%s %s" % (err.smtp_code, text)


def _refusals(refused: dict) -> str:
    parts = []
    for addr, reply in sorted(refused.items()):
        code, text = reply
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        parts.append("%s (%s %s)" % (addr, code, text))
    return ", ".join(parts)
