"""The backup a restore request names: where it is, and whether it may be restored.

It is a folder or a .gz (found also when the folder's name is given without
`.gz`); a .gz is restored only where hotvcb runs on the host itself, which
unpacks it. It may be restored when it is good (store/health.py: the answer
rotation, list, verify and restore share), sealed (STATUS.ok), and its
manifest says ok; a ghettoVCB backup has no manifest and is accepted on
STATUS.ok (or the STATUS.warn it gave a VM with independent disks) and its
disks judged whole (store/ghettovcb_health.py, in its VM's folder or a copy
outside it), its checksums not available (its .gz, which holds no STATUS, on health.py's
judgement of what it holds).
"""

from typing import Any, Dict, Optional, Tuple

from ..errors import HostError
from ..filetext import read_small
from ..localshell import LocalShell
from ..restorefile import RestoreRequest
from ..shell import FileReader, Shell
from ..runid import RunId, parse
from ..store import health, layout, manifest, seal
from .ownership import owner_alive
from .restore_plan import RestoreError


def locate(shell: Shell, path: str) -> Tuple[str, bool]:
    """The backup (a folder, or a .gz) and whether it is compressed."""
    if shell.isdir(path):
        return path, False
    for gz in ([path] if path.endswith(".gz") else []) + [path + ".gz"]:
        if shell.exists(gz):
            if not isinstance(shell, LocalShell):
                raise RestoreError("%s: compressed backups restore only when hotvcb runs on the host itself" % gz)
            return gz, True
    raise RestoreError(layout.not_there(shell, path))


def require_still_there(shell: Shell, backup: str) -> None:
    """After a failed copy: a backup folder gone meanwhile is what failed, not the file the copy named (a
    checked descriptor of the restore's own, whose extents are no longer there). Rotation by a backup of
    the VM running beside the restore removes the very backup `--latest` took (the newest finished one)."""
    if not shell.isdir(backup):
        raise RestoreError("the backup %s was removed while it was being restored (rotation of a running backup "
                           "of the VM?); nothing was registered" % backup)


def check_sealed(shell: Shell, req: RestoreRequest, fs: FileReader, backup: str, unsealed_ok: bool = False) -> bool:
    """`fs` reads the backup's files: the shell, or a targz.ArchiveView of a .gz not unpacked yet. Its STATUS
    files are read by layout.folder_status's rule, as health.judge reads a backup in place. True for a backup
    good without a STATUS file: ghettoVCB's .gz, which never holds one (health.py judges what it holds
    instead); its unpacked folder is then checked with `unsealed_ok`."""
    named = layout.from_path(shell, backup) if fs is shell or backup.endswith(".gz") else None
    verdict = health.judge(shell, named) if named is not None else _as_recorded(shell, fs, backup)
    if verdict is not None and not verdict.good:
        raise RestoreError("%s is not a good backup (%s)" % (
            req.backup, partial_which(shell, backup) if verdict.state == "partial" else verdict.reason))
    # health's one rule, as verify and restore --kvm read it: the worst STATUS file wins (a copy's STATUS.ok
    # beside its STATUS.error restored), and a STATUS.ok seals only as a regular file (a directory restored)
    status = layout.folder_status(fs, backup)
    if status == "ok" or named is not None and status == "warn":
        return False  # good, sealed (a ghettoVCB STATUS.warn in place too: store/health.py)
    if status != "incomplete":
        name = "STATUS." + status
        try:
            reason = read_small(fs, backup + "/" + name, layout.STATUS_MAX).strip()
        except HostError:
            reason = ""
        raise RestoreError("%s is not a good backup (%s%s)" % (req.backup, name, ": " + reason if reason else ""))
    if fs.exists(backup + "/STATUS.ok"):
        raise RestoreError("%s is not a good backup (its STATUS.ok is no regular file, which no run writes: it "
                           "seals nothing)" % req.backup)
    if unsealed_ok or (named is not None and named.compressed):
        return True
    raise RestoreError("%s is not sealed (no STATUS.ok): an unfinished or foreign backup" % req.backup)


def partial_which(shell: Shell, partial: str) -> str:
    """Which a `-partial` backup is, where its owner record tells (jobs/ownership.owner_alive): being written
    by a run of this machine that still runs, or left by one that died (cleanup removes it); else both, as
    health.judge says it, with the record's run and machine (another machine's run, a pid that cannot tell)."""
    owner = parse(seal.owner_of(shell, partial))
    if owner is None:
        return "being written, or left by a run that died: it has no owner record to say which"
    me = RunId.new()
    alive = owner_alive(owner, me) if owner.same_machine(me) else None
    if alive:
        return "being written by a backup running now (run %s, pid %d)" % (owner.run, owner.pid)
    if alive is False:
        return "left by a run that died (run %s, pid %d); `hotvcb cleanup` removes it" % (owner.run, owner.pid)
    return "being written, or left by a run that died: run %s of %s, whose process cannot be told from here" % (
        owner.run, owner.machine_seen_from(me))


def _as_recorded(shell: Shell, fs: FileReader, backup: str) -> Optional[health.Health]:
    """A backup folder outside its VM's folder (a copy the admin made, one a repository staged), which
    health.judge never sees: judged as one in place is (health.by_contents: every disk's data has a
    checksum, what its manifest names is there at the size it says, every disk its .vmx names accounted
    for; a ghettoVCB backup's disks whole, as verify of the same path judges them), so it is refused before
    anything is written (a disk cut short by the copy is a stat's answer, not the checksum read's hours into
    the clone). None where its STATUS says it failed or is missing (check_sealed says why, and passes the
    unpacked folder of a ghettoVCB .gz, judged whole already), or its manifest does not read
    (manifest_to_verify says why)."""
    if fs is not shell:
        return None
    status = layout.folder_status(shell, backup)
    if status not in ("ok", "warn"):
        return None
    try:
        data = manifest.load(shell, backup)
        present = set(shell.list_files(backup))
    except (ValueError, HostError):
        return None
    return health.by_contents(shell, backup, status, data, present)


def manifest_to_verify(shell: Shell, req: RestoreRequest, log, backup: str, verify: bool) -> Optional[Dict[str, Any]]:
    """The manifest the backup's checksums are verified against (one that says ok), or None: not
    verified (a ghettoVCB backup, or `verify` False: --no-verify)."""
    try:
        data = manifest.load(shell, backup)
    except ValueError as err:
        raise RestoreError("%s: %s" % (req.backup, err)) from err
    if data is None:
        if req.staged:  # a repository's backup, staged: its chunks were hash-checked as they were read
            log.info("%s: staged from the repository, every chunk hash-checked as it was read" % req.backup)
        else:
            log.info("%s has no %s (a ghettoVCB backup): accepted without checksums to verify" % (
                req.backup, manifest.MANIFEST))
        return None
    if data.get("result") not in ("ok", None):
        raise RestoreError("%s is recorded as %s: %s" % (req.backup, data.get("result"), data.get("message", "")))
    if not verify:
        log.info("Not verifying checksums (--no-verify)")
        return None
    return data
