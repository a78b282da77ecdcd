"""The ESXi driver's datastores: the listing (read once per run for names and roots; a mount or unmount of
ours reads it again), NFS mounts, and a path's free space (`datastore/info` of the one datastore holding it,
the listing as the fallback; a /vmfs/volumes path on no datastore is an error, never the ramdisk's room)."""

from typing import Dict, List, Optional

from ..background import Kept
from ..errors import CommandFailed, HostError
from ..model import DatastoreInfo, NfsShare
from ..shell import Shell
from . import vimcmd
from .esxi_vim import Vim


class EsxiStores:
    def __init__(self, shell: Shell, vim: Vim):
        self.shell, self._vim = shell, vim
        # Few host commands (each is a round trip to hostd, and over SSH one more):
        # the datastore listing is read once per run for names and roots (only a
        # mount or unmount of ours changes it), the free-space figure is refreshed
        # with `datastore/info` of the one datastore.
        self._stores = Kept()  # type: Kept[List[DatastoreInfo]]
        self._roots = {}  # type: Dict[str, str]  # real path of /vmfs/volumes/<name> -> name
        self._store_of = {}  # type: Dict[str, Optional[str]]  # path asked about -> its datastore

    def datastores(self) -> List[DatastoreInfo]:
        """The full listing, read now (free space included); also refreshes the cached names."""
        stores = self._stores.value = self._listing()
        return list(stores)

    def _listing(self) -> List[DatastoreInfo]:
        return vimcmd.parse_datastore_listsummary(self._vim(["hostsvc/datastore/listsummary"]))

    def known(self) -> List[DatastoreInfo]:
        """Names and urls: the listing read at most once until a mount or unmount changes it."""
        return list(self._stores.get(self._listing))

    def _forget(self) -> None:
        self._stores.value = None
        self._roots, self._store_of = {}, {}

    def mount_nfs(self, name: str, server: str, share: str, version: str) -> None:
        """ghettoVCB's non-persistent mount: `nas_create name version path readonly server`.

        vim-cmd takes `nfs` (v3) or `nfsv41`; the config's ghettoVCB-style `nfs41` means the latter.
        """
        version = {"nfs41": "nfsv41"}.get(version, version)
        try:
            self._vim(["hostsvc/datastore/nas_create", name, version, share, "0", server], timeout=120)
        finally:
            self._forget()

    def unmount_nfs(self, name: str) -> None:
        try:
            self._vim(["hostsvc/datastore/destroy", name], timeout=120, interruptible=False)
        finally:
            self._forget()

    def nfs_share(self, name: str) -> Optional[NfsShare]:
        """`datastore/info NAME`'s NAS block; None for a VMFS datastore, or a host whose `info` fails."""
        try:
            return vimcmd.parse_nas_share(self._vim(["hostsvc/datastore/info", name]))
        except CommandFailed:
            return None

    def free_space(self, path: str) -> Optional[int]:
        """Free bytes of the datastore holding path; None for a path outside /vmfs/volumes.

        A /vmfs/volumes path on no datastore (a typo in VM_BACKUP_VOLUME, an
        NFS share that is not mounted) is an error: writing there would fill
        the host's ramdisk instead of the backup target.
        """
        if path not in self._store_of:
            self._store_of[path] = self._datastore_holding(path)
        name = self._store_of[path]
        if name is None:
            return None
        return self._free_of(name)

    def _datastore_holding(self, path: str) -> Optional[str]:
        real = self.shell.realpath(path)
        stores = self.known()
        for ds in stores:
            if ds.name not in self._roots:
                self._roots[ds.name] = self.shell.realpath("/vmfs/volumes/" + ds.name)
            roots = {ds.url, "/vmfs/volumes/" + ds.name, self._roots[ds.name]}
            if any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots if r):
                return ds.name
        if path.startswith("/vmfs/volumes/"):
            raise HostError("%s is not on a datastore of this host (datastores: %s)"
                            % (path, ", ".join(sorted(d.name for d in stores)) or "none"))
        return None

    def _free_of(self, name: str) -> int:
        """One datastore's free bytes now: `datastore/info NAME`, not the whole listing."""
        try:
            free = vimcmd.parse_datastore_free(self._vim(["hostsvc/datastore/info", name]))
        except (CommandFailed, ValueError):
            free = None  # an old host without `info`, or output we cannot read: the listing says it
        if free is None:
            found = [d.free for d in self.datastores() if d.name == name]
            if not found:
                raise HostError("datastore %s is gone" % name)
            return found[0]
        return free


def datastore_of(path: str, names: Dict[str, str]) -> str:
    """Datastore name of a /vmfs/volumes path, whether it names the UUID or the label."""
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "vmfs" and parts[2] == "volumes":
        return names.get(parts[3], parts[3])
    return ""
