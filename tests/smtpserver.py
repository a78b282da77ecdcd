"""A real SMTP server on 127.0.0.1 for notify tests (aiosmtpd in a thread).

A real server rather than a mocked smtplib, so the tests catch what a relay
would actually reject: bad envelopes, AUTH before TLS, broken MIME, and
certificate checks that only happen on a genuine TLS handshake.
"""

import email
import email.policy
import shutil
import socket
import ssl
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional, Tuple

import pytest

_WHY = "aiosmtpd (the test SMTP server) is not installed; scripts/install-test-deps installs it"
aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller", reason=_WHY)
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp", reason=_WHY)


class Received(NamedTuple):
    mail_from: str
    rcpt_tos: List[str]
    message: email.message.EmailMessage
    raw: bytes
    tls: bool  # whether the session was encrypted when DATA arrived
    login: Optional[str]  # user name the session authenticated as


class _Recorder:
    def __init__(self) -> None:
        self.messages = []  # type: List[Received]

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.authenticated else None
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg,
                                      raw, _encrypted(server, session), login))
        return "250 OK"


def _encrypted(server, session) -> bool:
    # session.ssl is only filled in by STARTTLS; implicit TLS shows on the transport
    return session.ssl is not None or \
        server.transport.get_extra_info("ssl_object") is not None


class Server(NamedTuple):
    host: str
    port: int
    messages: List[Received]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path) -> Tuple[Path, Path]:
    """Self-signed cert valid for 127.0.0.1 / localhost, made by the openssl CLI."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl CLI not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
    )
    return cert, key


def _authenticator(users):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, aiosmtpd_smtp.LoginPassword) and \
            users.get(auth_data.login.decode()) == auth_data.password.decode()
        return aiosmtpd_smtp.AuthResult(success=ok, handled=False, auth_data=auth_data)
    return check


@contextmanager
def smtp_server(
    *,
    tls: str = "none",
    cert: Optional[Tuple[Path, Path]] = None,
    users: Optional[dict] = None,
    auth_require_tls: bool = True,
) -> Iterator[Server]:
    """Run a server for the with-block; tls is "none", "starttls" or "smtps".

    users: {name: password} enables AUTH; with auth_require_tls (the
    default, like any sane relay) AUTH is refused before STARTTLS.
    """
    recorder = _Recorder()
    ctx = None
    if tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    kwargs = dict(hostname="127.0.0.1", port=free_port(), ready_timeout=5.0,
                  server_hostname="smtp.test", enable_SMTPUTF8=True,
                  auth_require_tls=auth_require_tls)
    if tls == "starttls":
        kwargs["tls_context"] = ctx
    elif tls == "smtps":
        kwargs["ssl_context"] = ctx
    if users is not None:
        kwargs["authenticator"] = _authenticator(users)
    controller = aiosmtpd_controller.Controller(recorder, **kwargs)
    controller.start()
    try:
        yield Server("127.0.0.1", controller.port, recorder.messages)
    finally:
        controller.stop()


def mail_keys(server: Server, **extra) -> dict:
    """The config keys that send a run's mail to `server`, at once (EMAIL_DELAY_INTERVAL=0), in plain text."""
    keys = dict(EMAIL_LOG=1, EMAIL_SERVER="127.0.0.1", EMAIL_SERVER_PORT=server.port, EMAIL_TLS="none",
                EMAIL_TO="admin@example.org", EMAIL_DELAY_INTERVAL=0)
    keys.update(extra)
    return keys


def wait_mail(server: Server, count: int = 1, timeout: float = 10.0) -> List[Received]:
    """The messages `server` has once it holds `count` (or `timeout` passed): the run may send after it exits."""
    deadline = time.monotonic() + timeout
    while len(server.messages) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(server.messages)
