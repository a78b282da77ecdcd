"""What a dry run asks beside the pre-flight (jobs/preflight.py): the checks the real run makes only once
it has begun the VM's backup, asked here before the VM's turn ends, the same functions the real run calls.

A real run into a repository checks it when it opens it (repo_backup.RepoSink.begin: hotvcb on the host
itself, the share mounted, a new repository's folder and codec; an existing one's config, its GC marks and
damage records, and that it can be written to) and each disk as it copies it
(repo_backup.read_as: hosted sparse disks and qcow2 images are refused). Its dry run said "OK, only a
dryrun" with exit 0 of a job whose every real run then failed (README: a dry run that finds what the real
run would fail on exits that run's code). Nothing is made or changed: a repository not yet there is only
checked for the place it would be made in, an existing one is opened read-only (repo_backup.check_open).
"""

from typing import Dict, List

from ..errors import CopyError
from ..hosts.base import Hypervisor
from ..model import Disk, DiskResult, Vm, VmResult
from ..settings import Settings


def check(host: Hypervisor, s: Settings, log, vm: Vm, disks: List[Disk]) -> Dict[str, str]:
    """The disks the real run's copy would fail (disk key -> why), each said as that run's error line would;
    HotvcbError (the VM fails, as its real run would) for a repository its real run could not open."""
    if not s.vm_backup_repository:
        return {}
    from .repo_backup import check_open, check_target, read_as  # the repository's code: only runs using one
    check_target(host, s.vm_backup_repository, s.vm_backup_repository_compression)
    check_open(s.vm_backup_repository)
    refused = {}  # type: Dict[str, str]
    for disk in disks:
        try:
            read_as(host, disk)
        except CopyError as err:
            log.error("ERROR: DRY RUN: the real run's backup of %s for %s would fail: %s" % (disk.path, vm.name, err))
            refused[disk.key] = str(err)
    return refused


def report(result: VmResult, disks: List[Disk], capacity: Dict[str, int], refused: Dict[str, str]) -> None:
    """The VM's result as the real run's would be (jobs/backup_end.py): every disk refused fails the VM, some
    make it "warn"; the report's DISKS and SIZE are what the run would copy."""
    result.disks = [DiskResult(d, d.key not in refused, bytes=capacity[d.key], error=refused.get(d.key, ""))
                    for d in disks]
    if len(refused) == len(disks):
        result.status, result.message = "error", "; ".join(refused[d.key] for d in disks)
    else:
        result.status = "warn" if refused else "ok"
