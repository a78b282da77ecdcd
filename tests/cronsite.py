"""What the tests that install Linux schedules through the real command line stand on: a `crontab` on PATH
keeping its table in a file (the real crontab(1) needs a user and a spool, and a test must not touch root's
table) and a QEMU site whose VM a scheduled job names. Shared by tests/test_schedule.py and
tests/test_outsider_s29argv.py."""
import os

import pytest


@pytest.fixture
def fake_crontab(tmp_path, monkeypatch):
    """The table's path (it does not exist until something is installed); `crontab -l`, `crontab -` as the
    real one answers them, anything else exit 2."""
    table = tmp_path / "table"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "crontab"
    script.write_text('#!/bin/sh\ncase "$1" in\n'
                      '-l) [ -f %(t)s ] || { echo "no crontab for $(id -un)" >&2; exit 1; }; cat %(t)s;;\n'
                      '-) cat > %(t)s;;\n*) exit 2;;\nesac\n' % {"t": table})
    script.chmod(0o755)
    monkeypatch.setenv("PATH", "%s:%s" % (bindir, os.environ["PATH"]))
    return table


@pytest.fixture
def qemu_site(tmp_path):
    """A QMP folder with VM "vm one" (listing needs only the socket's name), a config, a backup target."""
    qmp = tmp_path / "qmp"
    qmp.mkdir()
    (qmp / "vm one.qmp").write_text("")
    (tmp_path / "backups").mkdir()
    conf = tmp_path / "hotvcb.conf"
    conf.write_text("VM_BACKUP_VOLUME=%s\n" % (tmp_path / "backups"))
    return qmp, conf
