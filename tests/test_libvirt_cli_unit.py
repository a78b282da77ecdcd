"""`--libvirt [URI]`: the URI is optional, before a subcommand and in a scheduled job's arguments alike."""

import pytest

from hotvcb.cli import build_parser
from hotvcb.commands import common, schedule_cmd
from hotvcb.errors import UsageError


@pytest.mark.parametrize("argv, uri", [
    (["--libvirt", "backup", "-m", "web"], "qemu:///system"),
    (["--libvirt", "qemu:///session", "backup", "-m", "web"], "qemu:///session"),
    (["--libvirt=qemu:///session", "backup", "-a"], "qemu:///session"),
])
def test_the_uri_is_optional(argv, uri):
    args = build_parser().parse_args(common.libvirt_uri_given(argv))
    assert common.target_of(args) == common.Target(None, None, uri)
    assert common.target_argv(common.target_of(args), str) == ["--libvirt", uri]


def test_a_scheduled_job_keeps_the_libvirt_target_and_its_arguments():
    glob, rest = schedule_cmd.split_job_args(["--", "--libvirt", "-a", "-g", "/etc/hotvcb.conf"])
    assert glob == ["--libvirt=qemu:///system"] and rest == ["-a", "-g", "/etc/hotvcb.conf"]


def test_one_target_at_a_time():
    args = build_parser().parse_args(common.libvirt_uri_given(["--libvirt", "--qemu", "/run/qmp", "backup", "-a"]))
    with pytest.raises(UsageError, match="--qemu and --libvirt exclude each other"):
        common.target_of(args)


def test_only_the_global_option_is_rewritten():
    from hotvcb.cli import _skip_global_options

    argv = ["--libvirt", "restore", "X", "--kvm", "D", "--libvirt"]
    first = _skip_global_options(argv)
    assert first == 1 and common.libvirt_uri_given(argv[:first]) + argv[first:] == [
        "--libvirt=qemu:///system", "restore", "X", "--kvm", "D", "--libvirt"]
