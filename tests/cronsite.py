"""What the tests that install Linux schedules through the real command line stand on: a `crontab` on PATH
keeping its table in a file (the real crontab(1) needs a user and a spool, and a test must not touch root's
table) and a QEMU site whose VM a scheduled job names. Shared by tests/test_schedule.py and
tests/test_outsider_s29argv.py; the crontab alone (crontab_on_path) by the SSH-mode outsider tests too."""
import os

import pytest


def crontab_on_path(tmp_path, missing="no crontab"):
    """A `crontab` in tmp_path/bin keeping the Linux box's table in tmp_path/table, byte for byte: `crontab -l`
    (exit 1 saying `missing` while there is no table) and `crontab -` as the real one answers them, anything
    else exit 2. (the table's path, a PATH with that crontab first)."""
    table, bindir = tmp_path / "table", tmp_path / "bin"
    bindir.mkdir()
    (bindir / "crontab").write_text('#!/bin/sh\ncase "$1" in\n'
                                    '-l) [ -f %(t)s ] || { echo "%(m)s" >&2; exit 1; }; cat %(t)s;;\n'
                                    '-) cat > %(t)s;;\n*) exit 2;;\nesac\n' % {"t": table, "m": missing})
    (bindir / "crontab").chmod(0o755)
    return table, "%s:%s" % (bindir, os.environ["PATH"])


@pytest.fixture
def fake_crontab(tmp_path, monkeypatch):
    """The table's path (it does not exist until something is installed); `crontab -l`, `crontab -` as the
    real one answers them, anything else exit 2."""
    table, path = crontab_on_path(tmp_path, "no crontab for $(id -un)")
    monkeypatch.setenv("PATH", path)
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
