"""The leftovers of killed runs that `status` names, judged as `hotvcb cleanup` judges them: a backup's
`-partial` folder whose run died (and the half-written `.gz.tmp` archive beside it), and a restore's unfinished
VM folder (`<name>.hotvcb-restoring`) or unpacked copy of a `.gz` whose restore died. Each may take a whole
VM's room and is neither a backup nor a VM; named only by cleanup, status told the admin who looked after a
crash that all was well. WARN: nothing restorable
is lost, but room is, until `hotvcb cleanup` removes them. A live run's are not named, as cleanup leaves them.
"""

import io
from typing import Callable, List, Optional, Sequence, Set

from ..errors import HotvcbError
from ..hosts.base import Hypervisor
from ..runid import RunId, known_host_id
from ..runlog import RunLog
from ..settings import Settings
from ..store import layout, rotation
from ..treeview import ScannedShell
from ..units import human_size
from . import restore_sweep
from .restore_scratch import RESTORING
from .partials import dead_archives, partial_dead
from .status_report import WARN, Check

CLEANUP = "`hotvcb cleanup` removes it"


def leftover_checks(host: Hypervisor, settings: Settings, settings_of: Optional[Callable[[str], Settings]],
                    names: Sequence[str], me: RunId) -> List[Check]:
    """A WARN for each leftover of a dead run: the -partial folders where each VM's backups go (`names`,
    with their own settings: `settings_of`), then the restores' folders on the host's datastores."""
    me = me.on_host(known_host_id(host.shell, host.run_dir))  # this host's dead runs told by their pid alone
    checks = []  # type: List[Check]
    for name in names:
        try:
            own = settings if settings_of is None else settings_of(name)
        except HotvcbError:
            own = settings  # its backup check names the refusal
        if not own.vm_backup_repository:
            checks += _partials(host, own.vm_backup_volume, name, me)
    return checks + _restores(host, me)


def _partials(host: Hypervisor, volume: str, name: str, me: RunId) -> List[Check]:
    """A dead run's -partial folders, and the half-written archives (`.gz.tmp`) a killed compressed backup
    leaves beside them, as big again: each named with its size, as cleanup removes each. Status holds no
    lock: a run of another machine on this host is judged by its heartbeat (partials.partial_dead). Read-only
    by promise: judged as a dry run, no clock probe written into the VM's folder."""
    shell = ScannedShell(host.shell, layout.vm_root(volume, name))
    try:
        dead = [b.path for b in layout.list_backups(shell, volume, name)
                if b.status == "partial" and partial_dead(shell, b.path, me, locked=False, dry_run=True)]
        archives = dead_archives(shell, volume, name, me, locked=False, dry_run=True)
        return [Check(WARN, "leftover", name, "%s %s (%s) left by a run that died: no backup, and it takes room on "
                      "the backup volume; %s" % (what, path, human_size(rotation.backup_size(shell, path)), CLEANUP),
                      {"path": path})
                for what, paths in (("unfinished backup", dead), ("unfinished archive", archives)) for path in paths]
    except HotvcbError:  # the volume cannot be read: the VM's backup check says so
        return []


def _restores(host: Hypervisor, me: RunId) -> List[Check]:
    found = set()  # type: Set[str]
    try:
        restore_sweep.sweep(host.shell, [d.url for d in host.datastores()], RunLog(stream=io.StringIO()), me,
                            dry_run=True, would_remove=found)
    except HotvcbError:  # a datastore that cannot be read: its own check says so
        return []
    return [Check(WARN, "leftover", folder.rsplit("/", 1)[-1], "%s left by a restore that died: %s; %s"
                  % (folder, "an unfinished VM folder, no VM" if folder.endswith(RESTORING)
                     else "a backup unpacked to restore it", CLEANUP), {"path": folder}) for folder in sorted(found)]
