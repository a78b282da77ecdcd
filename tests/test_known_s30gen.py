"""Testers' notes (session 30), each pinned through the public command line: an interrupted run that
waited for a silent mail server, a scheduled dry run, VM lists from a pipe, options given twice, blank
values, copy rates, a paused QEMU guest and a qcow2's own snapshots."""

import pytest

from localcli import local, said
from test_outsider_s29argv import _our_line, fake_crontab, qemu_site  # noqa: F401  (the fixtures)


def test_schedule_install_of_a_dry_run_warns_naming_the_flag(fake_crontab, qemu_site):
    """`schedule install ... -- -m web -g F -d dryrun` (the line tried by hand, pasted) installed a nightly
    job that never backs anything up, without a word: every night's log says "DRY RUN" to nobody."""
    qmp, conf = qemu_site
    r = local("schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", "--qemu", qmp,
              "-m", "vm one", "-g", conf, "-d", "dryrun")
    assert r.returncode == 0 and _our_line(fake_crontab), said(r)
    assert "warning" in r.stderr and "-d dryrun" in r.stderr and "never" in r.stderr, said(r)
    r = local("schedule", "install", "--platform", "linux", "--cron", "0 1 * * *", "--", "--qemu", qmp,
              "-m", "vm one", "-g", conf)
    assert r.returncode == 0 and "dryrun" not in r.stderr, said(r)
