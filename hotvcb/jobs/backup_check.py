"""The checks a backup passes before it is converted or booted (restore --kvm, verify --boot).

The same answers the ESXi restore gives (store/health.py decides what is
good; jobs/verify.py re-reads the checksums), for the jobs that read a
backup on this machine rather than through a hypervisor driver.
"""

from typing import Optional

from ..errors import HotvcbError
from ..shell import Shell
from ..store import health, layout, manifest
from .verify import verify_folder


def is_backup(shell: Shell, folder: str) -> bool:
    """A backup has a STATUS file; a folder `restore --kvm` wrote has none."""
    return any(shell.exists(folder + "/" + s) for s in layout.STATUS_FILES)


def require_good(shell: Shell, folder: str) -> None:
    named = layout.from_path(shell, folder)
    if named is not None:
        verdict = health.judge(shell, named)
        if not verdict.good:
            raise HotvcbError("%s is not a good backup (%s)" % (folder, verdict.reason))
    elif not shell.exists(folder + "/STATUS.ok"):
        raise HotvcbError("%s is not a good backup (no STATUS.ok)" % folder)


def require_checksums(shell: Shell, folder: str, log) -> None:
    """Every file against the manifest; a ghettoVCB backup (no manifest) passes on STATUS.ok."""
    try:
        data = manifest.load(shell, folder)
    except ValueError as err:
        raise HotvcbError("%s: %s" % (folder, err)) from None
    if data is None:
        log("%s has no %s (a ghettoVCB backup): checksums not available" % (folder, manifest.MANIFEST))
        return
    res = verify_folder(shell, folder, record=False)
    if res.status == "damaged":
        raise HotvcbError("%s fails verification: %s" % (folder, res.problems[0]))
    log("Checksums hold: %s" % res.message)


def newest_good(shell: Shell, volume: str, vm: str) -> Optional[str]:
    """The newest good backup folder of a VM (a .gz is skipped: these jobs read folders)."""
    good = [b.path for b in layout.list_backups(shell, volume, vm)
            if not b.compressed and health.judge(shell, b).good]
    return good[-1] if good else None
