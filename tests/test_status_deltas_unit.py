"""`hotvcb status` lists a VM's delta files once: the driver's consolidation judgement is given the deltas
status listed (Hypervisor.needs_consolidation(vm, deltas)), not left to list them again."""

import time
from types import SimpleNamespace

from hotvcb.jobs import status_report, status_snapshots
from hotvcb.runid import RunId

DELTA = "/vmfs/volumes/datastore1/web/web-000001.vmdk"


class _DeltaHost:
    """A host whose VM runs on a delta no snapshot owns, counting how often its deltas are listed."""

    def __init__(self):
        self.listings = 0
        self.judged = []  # type: list
        self.shell = SimpleNamespace(disk_usage=lambda path: 4096)

    def snapshots(self, vm):
        return []

    def delta_files(self, vm):
        self.listings += 1
        return [DELTA]

    def needs_consolidation(self, vm, deltas=None):
        deltas = self.delta_files(vm) if deltas is None else deltas
        self.judged.append(list(deltas))
        return "needs consolidation: delta files and no snapshot to own them" if deltas else ""

    def free_space(self, path):
        return 1 << 30


def test_status_judges_consolidation_from_the_deltas_it_listed_without_listing_them_again():
    host = _DeltaHost()
    vm = SimpleNamespace(name="web", folder="/vmfs/volumes/datastore1/web")
    checks = status_snapshots._snapshots(host, vm, status_report.Limits(), time.time(), False, RunId.new())
    assert host.listings == 1, host.listings
    assert host.judged == [[DELTA]]
    [check] = checks
    assert (check.severity, check.kind) == (status_report.CRIT, "consolidation"), check
    assert check.details["delta_files"] == [DELTA], check
