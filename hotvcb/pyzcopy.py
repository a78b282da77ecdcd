"""A run started from the pyz reads the whole pyz once, as it starts, and imports every module after
that from this copy in memory, never from the file again.

The admin upgrades hotvcb as the docs install it, `scp dist/hotvcb.pyz root@esxi01:/vmfs/volumes/ds/`,
which rewrites the file in place, perhaps while last night's run still copies a disk. Python's
zipimport reads the zip's table once and a module's bytes only when it is imported: a module a run
imports late (the mail code at the end of the run, the repository's code, an error path's own module)
was read from the new file at the old build's offsets, `ZipImportError: bad local file header`, and a
run whose backups were all good ended as an internal error with exit 1 and no mail. The copy costs the
pyz's size in memory (~0.6 MB) and one read. A run from the source tree (`python -m hotvcb` with the
package's folder on the path) imports as Python does. SSH mode's run on the host starts from a build
unpacked in its own folder (`onhost_boot.unpacked`), which no upgrade rewrites.
"""

import importlib.abc
import importlib.util
import io
import sys
import zipimport
import zlib
from importlib.machinery import ModuleSpec
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:  # zipfile (with struct, binascii) is imported by a run from the pyz only
    import zipfile

PACKAGE = "hotvcb"
_held = None  # type: Optional[bytes]


def hold() -> None:
    """If the package was imported from a zip, read that zip now and import the package's modules from
    the copy from here on (`pkgutil.get_data` of the package reads it too). A zip that cannot be read
    whole now (being rewritten as the run starts) leaves the imports to the file, as they always were:
    its table alone may read well while a module's bytes do not (scp writes over, then truncates), so
    every member's checksum is tested (testzip; ~0.6 MB, in memory)."""
    global _held
    package = sys.modules[PACKAGE]
    zipped = package.__spec__.loader if package.__spec__ is not None else None
    if _held is not None or not isinstance(zipped, zipimport.zipimporter):
        return
    import zipfile

    try:
        with open(zipped.archive, "rb") as f:
            data = f.read()
        zf = zipfile.ZipFile(io.BytesIO(data))
        if zf.testzip() is not None:
            return
        loader = _Loader(zipped.archive, zf)
    except Exception:  # noqa: BLE001 - whatever a half-written zip raises (BadZipFile, EOFError, ...), before the
        return  # CLI can word an error: the imports stay the file's, as they always were
    sys.meta_path.insert(0, _Finder(loader))
    package.__loader__ = package.__spec__.loader = loader
    _held = data


def held() -> Optional[bytes]:
    """The pyz this run started from, as it was when the run started (None: not run from a pyz)."""
    return _held


class _Finder(importlib.abc.MetaPathFinder):
    """The package's modules, found in the copy; names outside the package, and any the copy lacks, are
    left to the other finders."""

    def __init__(self, loader: "_Loader"):
        self.loader = loader

    def find_spec(self, fullname, path=None, target=None) -> Optional[ModuleSpec]:
        return self.loader.spec(fullname)


class _Loader(importlib.abc.SourceLoader):
    """The package's modules loaded from the copy, compiled from their sources as zipimport does with this
    pyz (it holds no bytecode); `get_data` also serves `pkgutil.get_data` of the package's files."""

    def __init__(self, archive: str, zf: "zipfile.ZipFile"):
        self.archive = archive  # the pyz's path, named as zipimporter names it (schedule.running_pyz reads it)
        self.zip = zf
        self.names = set(zf.namelist())

    def spec(self, fullname: str) -> Optional[ModuleSpec]:
        found = self._member(fullname)
        if found is None:
            return None
        member, package = found
        below = [self._path(member.rpartition("/")[0])] if package else None
        return importlib.util.spec_from_file_location(fullname, self._path(member), loader=self,
                                                      submodule_search_locations=below)

    def _member(self, fullname: str) -> Optional[Tuple[str, bool]]:
        """(the module's name in the zip, whether it is a package), or None."""
        if fullname.partition(".")[0] != PACKAGE:
            return None
        rel = fullname.replace(".", "/")
        for member, package in ((rel + "/__init__.py", True), (rel + ".py", False)):
            if member in self.names:
                return member, package
        return None

    def _path(self, member: str) -> str:
        return "%s/%s" % (self.archive, member)  # the __file__ zipimport gives the same module

    def get_filename(self, fullname: str) -> str:
        found = self._member(fullname)
        if found is None:
            raise ImportError("%s is not in %s" % (fullname, self.archive), name=fullname)
        return self._path(found[0])

    def get_data(self, path: str) -> bytes:
        member = path[len(self.archive) + 1:] if path.startswith(self.archive + "/") else ""
        if member not in self.names:
            raise FileNotFoundError("%s is not in %s as this run read it" % (path, self.archive))
        import zipfile  # loaded by hold() already: only a run from the pyz gets here

        try:
            return self.zip.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # OSError: what pkgutil.get_data's callers expect
            raise OSError("cannot read %s from %s: %s" % (member, self.archive, err)) from err

    def get_code(self, fullname: str):
        """SourceLoader's, a module's bytes that cannot be read an ImportError, as zipimport's would be (the
        CLI words an ImportError; any other error is an internal one)."""
        try:
            return super().get_code(fullname)
        except OSError as err:
            raise ImportError(str(err), name=fullname) from err
