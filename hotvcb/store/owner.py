"""Whose backup is this, where a folder's name does not say: the VM its manifest names.

Older writers named a VM's folder in ways that collide (layout.folder_vms): ghettoVCB's `a%5cb` for the
VM `a\\b` is older hotvcb's folder of a VM literally named `a%5cb`, and older hotvcb's `a%25b` of the VM
`a%25b` is today's folder of the VM `a%b`. A backup hotvcb made says whose it is in its manifest's "vm";
only a backup without one (ghettoVCB's) is judged by its folder's name. Without this, rotation of one VM
removed another's backups, and list and restore --latest took them for its own.
"""

import json
from typing import Optional

from ..errors import HostError
from ..filetext import read_small
from ..shell import Shell
from .manifest import MANIFEST, MANIFEST_MAX

FIRST_MEMBERS = 8  # hotvcb archives its manifest and STATUS first (seal.FIRST_IN_ARCHIVE): a few KiB read;
# a ghettoVCB archive (no manifest) is read through up to 8 members, its disks decompressed on the way


UNKNOWN = ""  # the owner of a backup whose manifest is there but does not read: no VM's


def manifest_vm(shell: Shell, path: str, compressed: bool) -> Optional[str]:
    """The VM a backup's manifest names; None where it has none (ghettoVCB's: judged by its folder's name);
    UNKNOWN where one is there but cannot be read or names no VM (damaged, an NFS error): taken for neither
    VM the folder may be of, so no rotation removes it on a guess. Any version's: a newer hotvcb's backup
    names its VM too, and must not be taken for another's."""
    try:
        text = _archived_manifest(shell, path) if compressed else _folder_manifest(shell, path)
        if text is None:
            return None
        vm = json.loads(text).get("vm")
    except (HostError, OSError, ValueError, AttributeError):
        return UNKNOWN
    return vm if isinstance(vm, str) else UNKNOWN


def _folder_manifest(shell: Shell, path: str) -> Optional[str]:
    where = path + "/" + MANIFEST
    return read_small(shell, where, MANIFEST_MAX) if shell.exists(where) else None


def _archived_manifest(shell: Shell, path: str) -> Optional[str]:
    """The manifest among an archive's first members (FIRST_MEMBERS), None past them: a ghettoVCB archive has
    none, and is read that far (its disks decompressed on the way: a tar stream reaches a header no other way)."""
    from .. import targz  # tarfile, bz2, lzma: only for .gz backups

    seen = [0]

    def enough(texts) -> bool:
        seen[0] += 1
        return MANIFEST in texts or seen[0] > FIRST_MEMBERS

    _top, _members, texts = targz.scan(path, wanted=(lambda rel: rel == MANIFEST,), opener=shell.open_binary,
                                       enough=enough)
    return texts.get(MANIFEST)
