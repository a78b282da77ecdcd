"""A minimal NBD client (fixed newstyle handshake, simple replies): the guest writer's way into a running QEMU.

Only what tests/qemuvm.py's GuestWriter needs: open an export by name, write,
disconnect. Each write is answered only once QEMU's block layer completed it,
so when `write` returns the data is in the export's node, as a guest's write
is once its virtio request completed.
"""

import socket
import struct

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_EXPORT_NAME = 1
REQUEST_MAGIC, SIMPLE_REPLY_MAGIC = 0x25609513, 0x67446698
CMD_WRITE, CMD_DISC = 1, 2


class NbdError(Exception):
    pass


class NbdClient:
    def __init__(self, path: str, export: str, timeout: float = 20):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.handle = 0
        try:
            self.sock.connect(path)
            self.size = self._handshake(export)
        except BaseException:
            self.sock.close()
            raise

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise NbdError("the NBD server closed the connection")
            data += chunk
        return data

    def _handshake(self, export: str) -> int:
        magic, opt_magic, flags = struct.unpack(">8sQH", self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("not a fixed-newstyle NBD server")
        no_zeroes = flags & FLAG_NO_ZEROES
        name = export.encode()
        self.sock.sendall(struct.pack(">IQII", FLAG_FIXED_NEWSTYLE | no_zeroes, IHAVEOPT, OPT_EXPORT_NAME, len(name))
                          + name)
        size, _flags = struct.unpack(">QH", self._recv(10))  # the server closes instead if the name is unknown
        if not no_zeroes:
            self._recv(124)
        return size

    def write(self, offset: int, data: bytes) -> None:
        self.handle += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, self.handle, offset, len(data)) + data)
        magic, error, handle = struct.unpack(">IIQ", self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC or handle != self.handle:
            raise NbdError("unexpected NBD reply %#x for handle %d" % (magic, handle))
        if error:
            raise NbdError("NBD write of %d bytes at %d failed: errno %d" % (len(data), offset, error))

    def close(self) -> None:
        try:
            self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self) -> "NbdClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
