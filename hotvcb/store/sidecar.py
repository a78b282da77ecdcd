"""A compressed (.gz) backup's records beside it: what verify found of it, what reading all of a ghettoVCB one found
(its archive is never rewritten in place), and where they are kept (GZ_RECORDS, in the VM's folder)."""

import json
from typing import Any, Dict, Tuple

from .. import namefit
from ..errors import HostError
from ..shell import Shell


GZ_VERIFY_SUFFIX = ".verify.json"  # a .gz's record, which cannot go into the archive (not rewritten in place)
GZ_RECORDS = ".hotvcb-gz-records"  # the folder, in the VM's, that holds them (gz_record)
SIDECAR_MAX = 1 << 20  # a size and verify's finding: a few hundred bytes


def gz_record(path: str) -> str:
    """Where a .gz backup's record is kept: `<VM folder>/.hotvcb-gz-records/<name>.gz.verify.json`.
    Not beside the archive, where hotvcb kept it first (old_gz_record): ghettoVCB's rotation takes
    every entry `ls` shows whose name holds `<VM>-<time>` for a backup, and an admin going back to
    it would lose a real backup early for each record. `ls` shows no dot-folder, nor does its name
    hold a backup's time. A name over 255 bytes (a VM name of 221-226 bytes) is fitted (namefit: its head and a
    digest), still ending `.gz.verify.json`; every name that fits is the one older hotvcb wrote."""
    root, _, name = path.rpartition("/")
    stem = name[: -len(".gz")] if name.endswith(".gz") else name
    return "%s/%s/%s" % (root, GZ_RECORDS, namefit.fit("", stem, ".gz" + GZ_VERIFY_SUFFIX))


def old_gz_record(path: str) -> str:
    return path + GZ_VERIFY_SUFFIX


def write_gz_sidecar(shell: Shell, path: str, data: Dict[str, Any]) -> None:
    """Write the record, and drop one of the old place (read_gz_verify read it into `data`)."""
    record = gz_record(path)
    shell.makedirs(record.rpartition("/")[0])
    shell.write_text(record, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    for old in gz_records(path)[1:]:
        shell.remove_tree(old)


def read_gz_verify(shell: Shell, path: str) -> Dict[str, Any]:
    """A .gz backup's record: its size when written, verify's last finding ({} if none); where an
    older hotvcb kept it, until the next write moves it."""
    for side in gz_records(path):
        try:
            if shell.exists(side):
                data = json.loads(shell.read_regular(side, SIDECAR_MAX))  # anyone may have planted a FIFO there
                return data if isinstance(data, dict) else {}
        except (ValueError, HostError):
            return {"verify_error": {"message": "%s is unreadable" % side}}
    return {}


def gz_records(path: str) -> Tuple[str, ...]:
    """Every place a .gz backup's record may be, the one it is kept in first (the old one only where its name
    fits: an older hotvcb could write none past 255 bytes)."""
    old = old_gz_record(path)
    fits = len(old.rpartition("/")[2].encode("utf-8", "surrogateescape")) <= namefit.NAME_MAX
    return (gz_record(path), old) if fits else (gz_record(path),)
