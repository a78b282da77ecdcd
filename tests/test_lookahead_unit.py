"""The run's first VM is read once (jobs/lookahead.py): where that read fails (a QMP socket that accepts and
never answers: a 30 s timeout), its turn says why without reading it again (`backup -m VM` took 60 s)."""
import pytest

from hotvcb.errors import HostError
from hotvcb.jobs.lookahead import Lookahead
from hotvcb.model import VmRef


class _Host:
    def __init__(self):
        self.loads = 0

    def load_vm(self, ref):
        self.loads += 1
        raise HostError("QMP %s: no greeting within 30 s" % ref.vmx_path)


def test_the_first_vms_failed_read_is_its_turns_error_without_a_second_read():
    host, ref = _Host(), VmRef("web", "web", "/run/qmp/web.qmp")
    ahead = Lookahead(host)
    ahead.ask(ref, keep=True)
    with pytest.raises(HostError, match="no greeting"):
        ahead.take(ref)
    assert host.loads == 1
    assert ahead.take(ref) is None  # said once: a later turn of that VM reads it itself


def test_a_later_vms_failed_read_ahead_is_read_again_in_its_turn():
    host, ref = _Host(), VmRef("db", "db", "/run/qmp/db.qmp")
    ahead = Lookahead(host)
    ahead.ask(ref)
    assert ahead.take(ref) is None and host.loads == 1
