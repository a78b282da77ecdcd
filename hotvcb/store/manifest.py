"""hotvcb.json: what a backup holds and how to prove it.

Written into the backup folder after every file is copied and hashed, and
before STATUS.*; see layout.py for the whole write order. Format (version 1):

    {"format": "hotvcb-backup", "version": 1,
     "vm": name, "vmid": id, "source_vmx": path, "host": text,
     "started": iso, "finished": iso, "result": "ok|warn|error", "message": text,
     "disk_format": fmt, "snapshot": {"name": n, "id": id, "memory": b, "quiesce": b},
     "disks": [{"key": "scsi0:0", "source": path, "files": [name...], "ok": b, "error": text}],
     "files": {relative name: {"size": n, "sha256": hex}},
     "verified": iso or null}
"""

import json
from typing import Any, Dict, Optional

MANIFEST = "hotvcb.json"
FORMAT = "hotvcb-backup"
VERSION = 1


def dumps(data: Dict[str, Any]) -> str:
    body = {"format": FORMAT, "version": VERSION}
    body.update(data)
    return json.dumps(body, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def load(shell, folder: str) -> Optional[Dict[str, Any]]:
    """The manifest of a backup, or None for one made by ghettoVCB."""
    path = folder + "/" + MANIFEST
    if not shell.exists(path):
        return None
    data = json.loads(shell.read_text(path))
    if data.get("format") != FORMAT:
        raise ValueError("%s is not a hotvcb manifest" % path)
    return data
