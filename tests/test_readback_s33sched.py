"""Review of 5 Dec (session 33): a `<<` that opens no here-document hid local.sh's `exit 0`, so the boot
block went below it and `show` said nothing; the record tidy-up's race with a seal on a shared volume."""

import os
import shlex

import pytest
from test_schedule_esxi import ARGS, LOCAL_SH, Esxi, _esxisim, pyz  # noqa: F401  (pyz: a fixture)

from hotvcb.localshell import LocalShell
from hotvcb.schedule import localsh
from hotvcb.store import rotation, sidecar

BLOCK = ["# hotvcb:n begin", "x", "# hotvcb:n end"]
RESTART = ["# hotvcb-crond begin", "y", "# hotvcb-crond end"]

NOT_HEREDOCS = [
    'logger "backup<<done"',  # the reviewer's: in double quotes
    "x=$((a<<b))",  # the reviewer's: arithmetic
    "echo 'a <<EOF b'",
    "((n<<=1))",
    "echo a\\<<EOF",
    "echo hi  # cat <<EOF",
    "cat <<<EOF",
    "cat <<EOF",  # a real one, never ended: read as none
]


@pytest.mark.parametrize("line", NOT_HEREDOCS)
def test_a_double_less_that_opens_no_ended_here_document_hides_no_exit(line):
    script = ["#!/bin/sh", line, "echo more", "exit 0"]
    assert localsh.with_block(script, "n", BLOCK, localsh.LOCAL_SH, RESTART) == \
        script[:3] + BLOCK + [""] + RESTART + [""] + ["exit 0"]
    assert localsh.unreached(script + BLOCK) == ["n"]


def test_a_here_document_after_a_quoted_double_less_is_still_text():
    script = ["#!/bin/sh", 'logger "a<<b"; cat > /etc/h.sh <<EOF', "exit 0", "EOF", "echo done"]
    assert localsh._final_exit(script) is None
    assert localsh.unreached(script + BLOCK) == []
    two = ["cat <<A <<-B", "exit 0", "A", "\texit 0", "\tB", "exit 1"]
    assert localsh._final_exit(two) == 5


def test_a_column_0_exit_above_a_block_is_said_after_an_unended_here_document():
    script = ["#!/bin/sh", "cat <<EOF", "exit 0"] + BLOCK
    assert localsh.unreached(script) == ["n"]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="esxisim needs root (mount namespaces)")
def test_install_puts_the_block_above_exit_after_a_quoted_double_less_and_show_warns_below(tmp_path, pyz):  # noqa: F811
    host = Esxi(tmp_path / "host", "8.0.2", pyz)
    try:
        host.sh("printf '%%s\\n' '#!/bin/sh' %s 'exit 0' > %s"
                % (shlex.quote('logger "backup<<done"'), LOCAL_SH))
        host.hotvcb("schedule", "install", *ARGS)
        local = host.read(LOCAL_SH).splitlines()
        assert local[-1] == "exit 0" and local.count("exit 0") == 1
        begin = [i for i, ln in enumerate(local) if ln.startswith("# hotvcb:hotvcb begin")]
        assert len(begin) == 1 and begin[0] < local.index("exit 0")
        assert "survives a reboot: yes" in host.hotvcb("schedule", "show").stdout
        # a block an earlier hotvcb put below that exit is reported, not passed over
        below = [ln for ln in local if ln != "exit 0"]
        below.insert(2, "exit 0")
        host.sh("printf '%%s\\n' %s > %s" % (" ".join(shlex.quote(ln) for ln in below), LOCAL_SH))
        assert "survives a reboot: no (the boot block is below an `exit` line" in host.hotvcb("schedule", "show").stdout
    finally:
        _esxisim("destroy", str(host.path))


def test_tidy_keeps_the_record_of_a_gz_a_seal_starts_while_it_runs(tmp_path, monkeypatch):
    """A seal on another host writes `.<name>.gz.tmp`, then its record, after the tidy-up listed the VM's
    folder: the record is kept (the folder is listed again after the records)."""
    root = str(tmp_path / "web")
    folder = os.path.join(root, sidecar.GZ_RECORDS)
    os.makedirs(folder)
    stale = os.path.join(folder, "web-2026-01-01_00-00-00.gz" + sidecar.GZ_VERIFY_SUFFIX)
    open(stale, "w").close()  # of a .gz gone without hotvcb's rotation
    shell = LocalShell()
    listdir, calls = shell.listdir, []

    def seal_starts_after_the_first_listing(path):
        out = listdir(path)
        calls.append(path)
        if len(calls) == 1:
            open(os.path.join(root, ".web-2026-02-02_00-00-00.gz.tmp"), "w").close()
            open(sidecar.gz_record(root + "/web-2026-02-02_00-00-00.gz"), "w").close()
        return out

    monkeypatch.setattr(shell, "listdir", seal_starts_after_the_first_listing)
    rotation._tidy_records(shell, root, None)
    assert os.listdir(folder) == ["web-2026-02-02_00-00-00.gz" + sidecar.GZ_VERIFY_SUFFIX]
