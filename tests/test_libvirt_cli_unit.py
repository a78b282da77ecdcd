"""`--libvirt [URI]`: the URI is optional, before a subcommand and in a scheduled job's arguments alike."""

import pytest

from hotvcb.cli import build_parser
from hotvcb.commands import runtarget, schedule_cmd
from hotvcb.errors import UsageError


@pytest.mark.parametrize("argv, uri", [
    (["--libvirt", "backup", "-m", "web"], "qemu:///system"),
    (["--libvirt", "qemu:///session", "backup", "-m", "web"], "qemu:///session"),
    (["--libvirt=qemu:///session", "backup", "-a"], "qemu:///session"),
])
def test_the_uri_is_optional(argv, uri):
    args = build_parser().parse_args(runtarget.libvirt_uri_given(argv))
    assert runtarget.target_of(args) == runtarget.Target(None, None, uri)
    assert runtarget.target_argv(runtarget.target_of(args), str) == ["--libvirt", uri]


def test_a_scheduled_job_keeps_the_libvirt_target_and_its_arguments():
    glob, rest = schedule_cmd.split_job_args(["--", "--libvirt", "-a", "-g", "/etc/hotvcb.conf"])
    assert glob == ["--libvirt=qemu:///system"] and rest == ["-a", "-g", "/etc/hotvcb.conf"]


def test_one_target_at_a_time():
    args = build_parser().parse_args(runtarget.libvirt_uri_given(["--libvirt", "--qemu", "/run/qmp", "backup", "-a"]))
    with pytest.raises(UsageError, match="--qemu and --libvirt exclude each other"):
        runtarget.target_of(args)


def test_only_the_global_option_is_rewritten():
    from hotvcb.cli import _skip_global_options

    argv = ["--libvirt", "restore", "X", "--kvm", "D", "--libvirt"]
    first, wrong = _skip_global_options(argv)
    assert first == 1 and wrong is None and runtarget.libvirt_uri_given(argv[:first]) + argv[first:] == [
        "--libvirt=qemu:///system", "restore", "X", "--kvm", "D", "--libvirt"]


class _Answer:
    returncode = 0

    def __init__(self, output):
        self.output = output


class _OneAnswerShell:
    def __init__(self, output):
        self.output, self.argv = output, None

    def run(self, argv, timeout, interruptible):
        self.argv = argv
        return _Answer(self.output)


def test_checkpoint_rows_keep_names_with_spaces_and_one_instant_is_one_time_whatever_the_offset():
    """`virsh -q checkpoint-list` prints local time: the same checkpoint read before and after a DST
    change (or under another TZ) must keep its creation time, or every backup would be full."""
    from hotvcb.hosts.virsh import Virsh

    shell = _OneAnswerShell(" hotvcb-snapshot-2026-03-29_01-00-00   2026-03-29 01:30:00 +0000\n"
                            " a checkpoint  of a user   2026-03-29 03:30:00 +0200\n"
                            " -5 is a name too          2026-03-29 00:30:00 -0100\n")
    rows = Virsh(shell).checkpoints("dom")
    assert rows == [("hotvcb-snapshot-2026-03-29_01-00-00", "2026-03-29 01:30:00 +0000"),
                    ("a checkpoint  of a user", "2026-03-29 01:30:00 +0000"),
                    ("-5 is a name too", "2026-03-29 01:30:00 +0000")]
    assert shell.argv[-3:] == ["checkpoint-list", "dom", "--topological"]
