"""The block jobs (an admin's drive-backup or drive-mirror, a backup tool's job) at work on a VM's disks.

A disk under a block job must take no snapshot of ours: QEMU refuses one under a mirror ("is busy"), but
lets one be taken under a backup job (whose copy-before-write filter stays above our overlay), and the
commit that would remove it then fails ("Need a root block node"), leaving our overlay under the running
guest. So the jobs are looked for before the snapshot is asked for, by the ids their owners gave them.

A job's nodes are told by QEMU's block graph (`x-debug-query-block-graph`: a job's edges lead to the nodes
it works on), so a job on another disk (one the backup skips) is not in the way. A QEMU without that
command names its jobs by their drive (`device`), as QEMU before 2.7 did: those are matched to the disks.
"""

from typing import Any, Dict, List, Set

from .qmp import QmpClient, QmpError


def jobs_on(qmp: QmpClient, disks: Dict[str, str]) -> List[str]:
    """Each block job at work on one of `disks` (drive name -> its top node name, as query-block gives
    them), as `id (type, status)`; none where QEMU cannot say."""
    try:
        jobs = qmp.execute("query-block-jobs") or []
    except QmpError:
        return []
    if not jobs:
        return []
    try:
        ids = _jobs_on_nodes(qmp.execute("x-debug-query-block-graph"), set(disks.values()))
    except QmpError:  # no block graph: a job is its drive's name
        ids = set(disks)
    return ["%s (%s, %s)" % (j.get("device", "?"), j.get("type", "?"), j.get("status", "?"))
            for j in jobs if j.get("device") in ids]


def _jobs_on_nodes(graph: Dict[str, Any], tops: Set[str]) -> Set[str]:
    """The names of the graph's block jobs with an edge to a node at or below one of the `tops`."""
    nodes = {n.get("id"): n for n in graph.get("nodes") or []}
    children = {}  # type: Dict[Any, List[Any]]
    for edge in graph.get("edges") or []:
        children.setdefault(edge.get("parent"), []).append(edge.get("child"))
    below = set()  # type: Set[Any]
    todo = [i for i, n in nodes.items() if n.get("name") in tops and n.get("type") == "block-driver"]
    while todo:
        node = todo.pop()
        if node not in below:
            below.add(node)
            todo.extend(children.get(node, []))
    return {str(n.get("name")) for i, n in nodes.items()
            if n.get("type") == "block-job" and below.intersection(children.get(i, []))}


def in_the_way(jobs: List[str]) -> str:
    """What the admin reads about the `jobs` on the VM's disks, and what to do."""
    return ("block job(s) on the VM's disks: %s -- a disk under a block job takes no snapshot: let it end, or "
            "cancel it (QMP block-job-cancel), then back the VM up" % ", ".join(jobs))
