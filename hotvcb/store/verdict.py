"""What a check of a backup found (Health: good, unverifiable or why not), as every check of store/health.py and
store/ghettovcb_health.py says it."""

from dataclasses import dataclass
from typing import Any, Dict, Optional

from . import manifest


GOOD_STATES = ("good", "unverifiable")


@dataclass
class Health:
    """The one verdict on a backup that rotation, list, status and restore all go by."""

    state: str  # good | unverifiable | warn | error | damaged | empty | incomplete | newer | partial | deleting | gone
    reason: str = ""
    manifest: Optional[Dict[str, Any]] = None
    verified: Optional[str] = None  # when a verify last passed
    warning: str = ""  # what a good backup lacks that its VM has: shown, never held against it
    newer: bool = False  # its manifest is a newer hotvcb's (manifest.NewerManifest): rotation leaves it alone

    @property
    def good(self) -> bool:
        return self.state in GOOD_STATES


def _not_ok(status: str, data: Optional[Dict[str, Any]] = None) -> Health:
    """`data`: its manifest, which says whose it is (rotation.made_elsewhere)."""
    reasons = {
        "warn": "STATUS.warn: some disks failed",
        "error": "STATUS.error: the backup failed",
        "incomplete": "not sealed (no STATUS file, or a STATUS.ok that is no regular file): never finished, or not a "
                      "backup",
    }
    return Health(status if status in ("warn", "error") else "incomplete", reasons.get(status, status), data)
