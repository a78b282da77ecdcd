"""kill -9 at every moment of a backup that matters: no good backup is lost, nothing incomplete looks
good, and the next run repairs everything (the trust issue's crash matrix; in a file of its own so
the test run can spread it and the rest of test_trust_e2e.py over two workers)."""

import os
import signal
import time

import pytest

from simhost import (backup_once as backup, backup_root, good, hotvcb, hotvcb_background, HostRelay, kill, lock_pid,
                     needs_root, ours, power, snapshot_names, wait_for, write_conf)

pytestmark = needs_root


# -- kill -9 at every moment that matters ----------------------------------------------------------

CRASH_POINTS = ["snapshot-created", "disk-copied-1", "disk-copied-2", "removing-snapshot", "snapshot-removed",
                "hashed", "manifest-written", "status-written", "published", "rotation-renamed"]
ARCHIVE_POINTS = ["compressed", "archive-published"]


VM = "crash me"
KEYS = dict(VM_BACKUP_ROTATION_COUNT=1, ALLOW_VMS_WITH_SNAPSHOTS_TO_BE_BACKEDUP=1)


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    """The plain crash points' host, handed from case to case: each case ends where the next begins (the VM's
    one good backup made with KEYS, its user snapshot kept, powered on, nothing left over), so the first
    good backup is made once per worker, not in every case (it was a quarter of this file's runs)."""
    hosts = HostRelay(tmp_path_factory)
    yield hosts
    hosts.stop()


def crash_me(host):
    return host.create_vm(VM, "datastore1", [{"size": "4M"}, {"size": "4M", "datastore": "ds5"}], power="on",
                          snapshots=["user snap"])


@pytest.mark.parametrize("point", CRASH_POINTS + ARCHIVE_POINTS + ["mid-clone", "power-down:disk-copied-1"])
def test_kill_9_at_any_moment_loses_no_good_backup_and_the_next_run_repairs_all(request, relay, point):
    vm = VM
    keys = dict(KEYS)
    if point in ARCHIVE_POINTS:
        keys["ENABLE_COMPRESSION"] = 1
    if point.startswith("power-down:"):
        keys.update(POWER_VM_DOWN_BEFORE_BACKUP=1, ENABLE_HARD_POWER_OFF=1, ITER_TO_WAIT_SHUTDOWN="5s")
    shared = keys == KEYS  # the next run's config (below): the state it leaves is where this case starts
    if shared:
        host, vmid, new = relay.take("plain", crash_me)
    else:
        host = request.getfixturevalue("host")
        vmid, new = crash_me(host), True
    conf = write_conf(host, **keys)
    if new:
        assert backup(host, conf, vm).returncode == 0
    [before] = good(host, conf, vm)

    if point == "mid-clone":
        host.set_fault("clone.delay", "10")
        proc = hotvcb_background(host, "-m", vm, "-g", conf)
        wait_for(lambda: ours(host, vmid) and lock_pid(host), what="the copy")
        time.sleep(1)
        kill(lock_pid(host), signal.SIGKILL)
        proc.communicate(timeout=60)
        host.clear_faults()
    else:
        r = backup(host, conf, vm, env={"HOTVCB_CRASH_AT": point.split(":")[-1]})
        assert r.returncode != 0 and "Final status" not in r.stdout, "the run was killed at %s" % point

    # right after the kill: the good backup is there, or rotated away by a newer good one; nothing else is good
    now = good(host, conf, vm)
    assert before in now or (now and now[-1] > before), now
    v = hotvcb(host, "verify", "--all", "-g", conf)
    assert v.returncode == 0, v.stdout + v.stderr

    # the next run repairs everything and succeeds
    r = backup(host, write_conf(host, name="next.conf", **KEYS), vm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot_names(host, vmid) == ["user snap"]
    assert "Powered on" in power(host, vmid)
    left = [b for b in os.listdir(backup_root(host, vm)) if b.endswith(("-partial", "-deleting", ".tmp"))]
    assert left == []
    assert len(good(host, conf, vm)) == 1
    v = hotvcb(host, "verify", "--all", "-g", conf)
    assert v.returncode == 0, v.stdout + v.stderr
    if shared:
        relay.hand_on("plain", host, vmid)
