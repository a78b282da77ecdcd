"""hotvcb as one zip file: what `scripts/build-pyz` writes and what SSH mode ships to a host.

The zip holds `__main__.py` (a copy of hotvcb/__main__.py, the version-checking entry) and
hotvcb/**.py, entries sorted, timestamps and modes fixed, no compiled files: the same sources
always give the same bytes, so a host that already holds this build (by its SHA-256) is sent
nothing (`hostrun.py`).
"""

import io
import os
import zipfile
from typing import List, Tuple

from . import pyzcopy

PACKAGE = "hotvcb"
EPOCH = (1980, 1, 1, 0, 0, 0)


def sources(root: str) -> List[Tuple[str, str]]:
    """(name in zip, path) for every .py file of the package under root, sorted."""
    out = []
    for folder, dirs, files in os.walk(os.path.join(root, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                out.append((os.path.relpath(path, root).replace(os.sep, "/"), path))
    return sorted(out)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.create_system = 3  # unix, whatever the build machine
    return info


def build(root: str) -> Tuple[bytes, int]:
    """(the zip, number of modules) of the package under root."""
    files = sources(root)
    if not any(n == PACKAGE + "/cli.py" for n, _ in files):
        raise FileNotFoundError("%s/cli.py not found under %s" % (PACKAGE, root))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        with open(os.path.join(root, PACKAGE, "__main__.py"), "rb") as f:
            zf.writestr(_entry("__main__.py"), f.read())  # the same guarded entry as `python -m hotvcb`
        for name, path in files:
            with open(path, "rb") as f:
                zf.writestr(_entry(name), f.read())
    return buf.getvalue(), len(files)


def this_package() -> bytes:
    """The running hotvcb as a pyz: the archive itself when we run from one (as it was when the run
    started: not a build copied over it since), else built now from the source tree (in memory: ~0.1 s,
    no cache to go stale)."""
    started = pyzcopy.held()
    if started is not None:
        return started
    here = os.path.dirname(os.path.abspath(__file__))
    archive = os.path.dirname(here)
    if os.path.isfile(archive) and zipfile.is_zipfile(archive):
        with open(archive, "rb") as f:
            return f.read()
    return build(archive)[0]


