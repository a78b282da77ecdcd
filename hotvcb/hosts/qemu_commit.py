"""Block-commit of one overlay into its backing image: the QMP steps that take a snapshot of the QEMU driver
away, driven to their end against one deadline.

Removal is a small state machine per overlay: `block-commit` into the backing
image; for the active layer wait until the job is ready, `block-job-complete`,
wait for it to end — all bounded by one deadline — and only then is the
overlay out of the disk's chain (the caller deletes its file). A commit job of
ours still running from a killed run is driven to its end first. An internal
snapshot taken in the overlay during the backup stops its commit: committing
would change the disk under it.
"""

import time
from typing import Any, Dict, List, Optional, Tuple

from ..errors import SnapshotError, SnapshotHeld, TimeoutExpired
from ..model import Vm
from .qemu_blockgraph import absolute_names, chain_of, format_node, inserted
from .qemu_overlay_names import UNSAFE, layer_snapshot
from .qmp import QmpClient, QmpCommandError, QmpError

JOB_PREFIX = "hotvcb-commit-"
POLL = 0.5

# (drive, its inserted image, the overlay's index in the chain, the chain): a layer to commit
Target = Tuple[str, Dict[str, Any], int, List[Dict[str, Any]]]


class Deadline:
    """One bound for a snapshot's whole removal, however many commits it takes; each QMP request within it is
    held to the driver's own QMP timeout as well (and given a few seconds however late it is)."""

    def __init__(self, timeout: float, qmp_timeout: float):
        self.timeout, self.qmp_timeout = timeout, qmp_timeout
        self.at = time.monotonic() + timeout

    def left(self) -> float:
        return max(min(self.at - time.monotonic(), self.qmp_timeout), 5.0)


def finish_killed_runs_jobs(qmp: QmpClient, vm: Vm, deadline: Deadline) -> None:
    """A commit job of ours that a killed run left running still moves the guest's writes: it is driven to
    its end before any new commit."""
    for job in qmp.execute("query-block-jobs"):
        if str(job.get("device", "")).startswith(JOB_PREFIX):
            wait_job(qmp, vm, job["device"], deadline)


def find_overlay(qmp: QmpClient, name: str) -> Optional[Target]:
    """The first layer (drives in order) that is the overlay called `name` above some image."""
    for key, ins in sorted(inserted(qmp).items()):
        chain = chain_of(ins.get("image") or {})
        for i in range(len(chain) - 1):
            if layer_snapshot(chain, i) == name:
                return key, ins, i, chain
    return None


def commit(qmp: QmpClient, vm: Vm, target: Target, deadline: Deadline) -> str:
    """Commit the target's overlay into the image below it; the overlay's file, which its disk no longer uses."""
    key, ins, i, chain = target
    overlay, backing = chain[i]["filename"], chain[i + 1]
    _refuse_internal_snapshots(vm, chain[i])
    nodes = absolute_names(qmp, qmp.execute("query-named-block-nodes", {"flat": True}))
    base = format_node(nodes, backing.get("filename"), backing.get("format"))
    if base is None:
        raise SnapshotError("%s: no block node for %s, the image below %s"
                            % (vm.name, backing.get("filename"), overlay))
    job_id = JOB_PREFIX + UNSAFE.sub("-", key)
    args = {"job-id": job_id, "device": ins["node-name"], "base-node": base}  # type: Dict[str, Any]
    if i > 0:  # not the active layer: an ordinary commit of one layer
        top = format_node(nodes, overlay, chain[i].get("format"))
        if top is None:
            raise SnapshotError("%s: no block node for %s" % (vm.name, overlay))
        args["top-node"] = top
    try:
        qmp.execute("block-commit", args, timeout=deadline.left())
    except QmpCommandError as err:
        raise SnapshotError("%s: commit of %s failed: %s" % (vm.name, overlay, err.desc)) from err
    error = wait_job(qmp, vm, job_id, deadline)
    still = any(l.get("filename") == overlay for l in chain_of((inserted(qmp).get(key) or {}).get("image") or {}))
    if still:
        raise SnapshotError("%s: commit of %s ended but the disk still uses it%s"
                            % (vm.name, overlay, ": " + error if error else ""))
    return overlay


def wait_job(qmp: QmpClient, vm: Vm, job_id: str, deadline: Deadline) -> str:
    """Drive a commit job to its end (complete it once ready); its error text, "" if none."""
    completing, error = False, ""

    def mine(ev: Dict[str, Any]) -> bool:
        data = ev.get("data") or {}
        return data.get("device") == job_id or data.get("id") == job_id

    while True:
        jobs = {j.get("device"): j for j in qmp.execute("query-block-jobs", timeout=deadline.left())}
        job = jobs.get(job_id)
        if job is None or job.get("status") in ("concluded", "null"):
            break
        if job.get("ready") and not completing:
            qmp.execute("block-job-complete", {"device": job_id}, timeout=deadline.left())
            completing = True
        if time.monotonic() > deadline.at:
            try:
                qmp.execute("block-job-cancel", {"device": job_id, "force": True}, timeout=10)
            except QmpError:
                pass
            raise TimeoutExpired("commit %s of %s" % (job_id, vm.name), deadline.timeout)
        ev = qmp.wait_event(mine, POLL)
        error = _job_error(ev) or error
    for ev in [e for e in qmp.events if mine(e)]:
        error = _job_error(ev) or error
    qmp.take_events("JOB_STATUS_CHANGE")
    return error


def _refuse_internal_snapshots(vm: Vm, layer: Dict[str, Any]) -> None:
    """An internal snapshot taken while our overlay was the disk's active layer (HMP `savevm`, virsh
    snapshot-create-as) lives in the overlay file: committing it would change the disk under that snapshot and
    deleting the file would destroy it, so the overlay stays, the VM on it, and the error names both."""
    names = [str(x.get("name", "?")) for x in layer.get("snapshots") or [] if isinstance(x, dict)]
    if names:
        raise SnapshotHeld(
            "%s: %s holds internal snapshot(s) %s taken during the backup: not committed, so they are kept, and "
            "the VM goes on writing that overlay; to keep them, leave it; once they are not needed (`delvm` in "
            "the VM's monitor), the next backup or `hotvcb --qemu DIR cleanup` commits it; never delete the file, "
            "which holds them and the guest's writes since the backup"
            % (vm.name, layer.get("filename", "?"), ", ".join(names)))


def _job_error(ev: Optional[Dict[str, Any]]) -> str:
    if not ev:
        return ""
    data = ev.get("data") or {}
    if ev.get("event") == "BLOCK_JOB_COMPLETED" and data.get("error"):
        return str(data["error"])
    if ev.get("event") == "BLOCK_JOB_ERROR":
        return "I/O error (%s)" % data.get("operation", "?")
    return ""
