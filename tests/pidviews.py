"""The processes of this machine as a record's reader sees them, for tests of who owns what (runid.running):
a live hotvcb at a record's pid (its writer, or a dead writer's pid reused by another hotvcb: told apart by
its start time), a live other program at it, a pid of another pid namespace, and a live process /proc hides.

Shared by the tests of the run lock, the GC lock and what a dead run leaves (`-partial` folders, a restore's
folders); the outside tester's attacks on the GC lock use the fixtures too.
"""

import errno
import os
import subprocess
import sys

import pytest

from hotvcb import pids


@pytest.fixture
def holder():
    """A live process of this machine that is no hotvcb (what a dead GC's pid may have been reused by)."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def hotvcb_holder():
    """A live process whose command line names hotvcb: a GC at work by any rule. Yielded once it runs its
    code: until its exec is through, /proc shows no command line (Popen returns before that)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)", "hotvcb",
                             "gc"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    yield proc.pid
    proc.kill()
    proc.wait()
    proc.stdout.close()


def start_of(pid):
    """The process's start time as /proc/PID/stat has it (its command name, python's, holds no space)."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().split()[21])


def other_namespace():
    """A pid namespace inode that is not ours."""
    return os.stat("/proc/self/ns/pid").st_ino + 1


def hide_from_proc(monkeypatch, pid):
    """/proc mounted hidepid=2 and `pid` another user's, as hotvcb's pids module sees it: the process's
    /proc entries are not there (ENOENT), though it lives (kill(pid, 0) finds it). The real thing, through
    the CLI as another user: test_outsider_gclockstart.py, `prune_as_nobody`."""
    hidden = "/proc/%d/" % pid

    def opener(path, *args, **kwargs):
        if str(path).startswith(hidden):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return open(path, *args, **kwargs)
    monkeypatch.setattr(pids, "open", opener, raising=False)  # the module's name before the builtin's
