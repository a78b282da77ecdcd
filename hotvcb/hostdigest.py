"""Block digests (blockdigest.py) of a file on the host: read here, or computed there.

A shell decides how: LocalShell reads the file (holes skipped), SshShell runs
blockdigest.py with the host's own python so only one JSON line crosses the
wire. Both return blockdigest's dict, or None where the host has no python
(the caller then falls back to the host's `sha256sum`). The virtual disk of a
qcow2 image (qcow2.py) is digested here only: over SSH file by file it is refused.
"""

import json
from typing import Any, Callable, Dict, Optional

from . import blockdigest, interrupt, qcow2
from .errors import HostError

# Runs blockdigest.py with the host's python (ESXi: /bin/python, 3.8); exit 127: none.
_REMOTE = ('for p in python3 python; do command -v "$p" >/dev/null 2>&1 && '
           'exec "$p" -c "$1" "$2" "$3" "$4"; done; exit 127')


def check_interrupt() -> None:
    if interrupt.pending():
        interrupt.raise_pending()


def local(path: str, block_size: int, whole: bool, on_block: Optional[Callable[[int], None]],
          content: str = "") -> Dict[str, Any]:
    """`content` "qcow2": the digests of the virtual disk the image holds (qcow2.py), not of the file."""
    try:
        with blockdigest.open_regular(path, block_device=True) as f:  # a VM's disk may be an LV
            if content == "qcow2":
                image = qcow2.Image(f, path)
                return blockdigest.digest_blocks(lambda ring: image.blocks(block_size, check_interrupt, ring),
                                                 block_size, whole, on_block)
            if content:
                raise HostError("cannot read %s: hotvcb reads no %.40r images" % (path, content))
            return blockdigest.digest_fd(f, block_size, whole, on_block, check_interrupt)
    except OSError as err:
        raise HostError("cannot read %s: %s" % (path, err.strerror or err)) from err


def by_command(run, path: str, block_size: int, whole: bool,
               on_block: Optional[Callable[[int], None]]) -> Optional[Dict[str, Any]]:
    """blockdigest's dict for a host file, through `run(argv)`; None when the host has no python."""
    done = run(["sh", "-c", _REMOTE, "hotvcb", _source(), path, str(block_size), "1" if whole else "0"],
               timeout=None)
    if done.returncode == 127:
        return None
    lines = [l for l in done.output.splitlines() if l.startswith("{")]
    try:
        out = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise HostError("cannot read %s: %s" % (path, done.output.strip()[-200:] or "exit %d" % done.returncode))
    if "error" in out or done.returncode != 0:
        raise HostError("cannot read %s: %s" % (path, out.get("error") or "exit %d" % done.returncode))
    if on_block is not None:
        on_block(int(out["size"]))
    return out


def _source() -> str:
    import pkgutil  # with importlib.util: for a digest on an SSH host only

    data = pkgutil.get_data(__package__, "blockdigest.py")
    if data is None:
        raise RuntimeError("blockdigest.py is not readable from the package")
    return data.decode("utf-8")
