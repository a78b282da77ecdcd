"""Module-level regular expressions, compiled at their first use instead of at import.

A run imported 40-55 patterns, 10-16 ms of compiling on Python 3.8 (a character class over the
surrogates alone ~1 ms), and used from 9 (`verify`) to 31 (a backup) of them.
"""

import re
from typing import Any, AnyStr, Pattern, Union, cast

_METHODS = ("match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer")


class _Lazy:
    """Stands in for the compiled pattern: its methods, `pattern` and `flags` (not isinstance)."""

    def __init__(self, pattern: Union[str, bytes], flags: int) -> None:
        self.pattern, self.flags = pattern, flags

    def __getattr__(self, name: str) -> Any:
        """Only for what the instance lacks, so only at the first use: the compiled pattern's bound
        methods then become the instance's own, and later calls cost what the pattern's do. A copy or an
        unpickling asks a bare instance (no pattern yet) for dunders first: those are not the pattern's."""
        if name.startswith("__") or name in ("pattern", "flags"):
            raise AttributeError(name)
        compiled = re.compile(self.pattern, self.flags)
        for method in _METHODS:
            setattr(self, method, getattr(compiled, method))
        return getattr(compiled, name)


def compile(pattern: AnyStr, flags: int = 0) -> "Pattern[AnyStr]":  # noqa: A001 - re.compile's stand-in
    return cast("Pattern[AnyStr]", _Lazy(pattern, flags))
