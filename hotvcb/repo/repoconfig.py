"""A repository's config (its `config` object, docs/repository.md "config"): the values every reader and
writer takes from it, and the checks a value must pass, each refused naming its key."""

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ..errors import RepoError


@dataclass(frozen=True)
class Config:
    """A repository's settings, as its config object holds them."""

    id: str
    chunk_size: int
    pack_size: int
    backup_limit: float  # seconds from loading the chunk map to writing the record
    settle: float  # how long another host may not yet see a new object (NFS caches)
    compression: str = "zlib"  # or "zstd": what writers use when they can

    @property
    def grace(self) -> float:
        """Age before GC may condemn a pack, and before it may delete a condemned one."""
        return self.backup_limit + 2 * self.settle


def check_config(chunk_size: int, pack_size: int, backup_limit: Any, settle: Any) -> Tuple[float, float]:
    """The config's sizes checked, and its GC timing as seconds; what is wrong is refused naming its key."""
    if chunk_size < 4096 or chunk_size & (chunk_size - 1) or chunk_size > 1 << 24:
        raise RepoError("chunk size %d: must be a power of two from 4 KiB to 16 MiB" % chunk_size)
    if not chunk_size <= pack_size <= 1 << 32:
        raise RepoError("pack size %d: must be from the chunk size to 4 GiB" % pack_size)
    return _seconds("backup_limit_seconds", backup_limit, 0.0), _seconds("settle_seconds", settle, None)


def _seconds(key: str, value: Any, above: Optional[float]) -> float:
    """A timing key's value as seconds: a finite JSON number, above `above` (None: 0 or more). float() alone
    would take a string of digits ("600") or a JSON boolean (true as 1 s), which the docs refuse."""
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:20] + "..." + shown[-8:]  # a 401-digit integer, say
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RepoError("%s %s: not a number of seconds" % (key, shown))
    try:
        seconds = float(value)
    except OverflowError as err:
        raise RepoError("%s %s: too large a number of seconds" % (key, shown)) from err
    if not math.isfinite(seconds) or (seconds <= above if above is not None else seconds < 0):
        raise RepoError("%s %s: must be a finite number of seconds, %s" % (
            key, shown, "0 or more" if above is None else "above %g" % above))
    return seconds
