"""Testers' notes (session 33, store): what status names after a crash, whose failed backups rotation may
remove, a .gz restore's room, old writers' .gz records, how far a .gz is read, overlay ages across time
zones, and on-host builds dated ahead of the clock; each pinned through the public CLI or API."""

import os
import time

from hotvcb import onhost_boot


# -- 7. a build dated ahead of the clock is not kept for ever ------------------------------------------------

def test_a_build_dated_ahead_of_a_stepped_back_clock_goes_a_week_after_it_was_first_seen(tmp_path):
    """A clock stepped back (NTP after a host booted with a wrong RTC) leaves an old build dated ahead of it:
    its age was negative, never over a week, so every such build stayed on ESXi's small /tmp for good."""
    cache = tmp_path / "cache"
    cache.mkdir()
    ahead = time.time() + 365 * 86400
    for name in ("hotvcb-old", "hotvcb-old.pyz"):
        (cache / name).mkdir() if "." not in name else (cache / name).write_bytes(b"x")
        os.utime(str(cache / name), (ahead, ahead))
    onhost_boot.forget_old_builds(str(cache), ())
    left = sorted(os.listdir(str(cache)))
    assert left == ["hotvcb-old", "hotvcb-old.pyz"], left  # seen now: its week starts now
    week_ago = time.time() - onhost_boot.KEEP_OLD_BUILDS - 60
    for name in left:
        assert os.path.getmtime(str(cache / name)) <= time.time() + 1, "still dated ahead"
        os.utime(str(cache / name), (week_ago, week_ago))  # a week on, unused
    onhost_boot.forget_old_builds(str(cache), ())
    assert os.listdir(str(cache)) == []
