"""QEMU's block graph as QMP shows it, read the one way every part of the QEMU driver needs.

`query-block` and `query-named-block-nodes` name an image as QEMU was given it (relative to QEMU's
working directory, not ours; behind filter nodes a `json:{...}` name) and show filter nodes as
backing images. The inventory, the copy and the overlays all compare those names: made absolute and
looked through filters here, in one place, they agree on which file a disk is.
"""

import json
from typing import Any, Dict, List, Optional

from .qmp import QmpClient

# block drivers that hold no data, only pass I/O on to their one child (query-block shows it as their
# backing image): a throttle node an admin puts over an image (-blockdev), copy-on-read, ...
FILTERS = frozenset(("throttle", "copy-on-read", "preallocate", "compress", "copy-before-write"))


def absolute_names(qmp: QmpClient, rows: Any) -> Any:
    """query-block's or query-named-block-nodes' rows with image names absolute. QEMU reports a file as it
    was named, so `-drive file=web.qcow2` started in /srv/vms is `web.qcow2`, relative to QEMU's working
    directory, not ours: every name the driver compares, copies or puts an overlay beside is made absolute
    (QmpClient.peer_file: the file QEMU holds open under that name), in one place, so they all agree. A name
    that cannot be proven stays relative, and the driver skips that disk, saying why. A node over a filter
    node (qcow2 over `preallocate` over `file`) is named `json:{...}` by QEMU: it is the file below the
    filters (below_filters)."""
    found = {}  # type: Dict[str, Optional[str]]

    def fix(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                fix(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in ("file", "filename") and isinstance(value, str):
                    value = node[key] = below_filters(value)
                if key in ("file", "filename") and isinstance(value, str) and relative_name(value):
                    if value not in found:
                        found[value] = qmp.peer_file(value)
                    node[key] = found[value] or value
                else:
                    fix(value)

    fix(rows)
    return rows


def below_filters(name: str) -> str:
    """The local file a `json:{"driver": FORMAT, "file": {"driver": "preallocate", "file": {"driver": "file",
    "filename": F}}}` name stands for (F: filter nodes between a format node and its file hold no data, as
    QEMU documents `preallocate`); any other name as it is (nbd, ssh, a json: of more than that)."""
    if not name.startswith("json:"):
        return name
    try:
        node = json.loads(name[len("json:"):])
    except ValueError:
        return name
    node = node.get("file") if isinstance(node, dict) else None
    while isinstance(node, dict) and node.get("driver") in FILTERS:
        node = node.get("file")
    if isinstance(node, dict) and node.get("driver") == "file" and isinstance(node.get("filename"), str) \
            and set(node) <= {"driver", "filename"}:
        return node["filename"]
    return name


def relative_name(name: str) -> bool:
    """A file name relative to QEMU's directory (not `/…`, and no `nbd:`, `json:`… protocol prefix)."""
    return bool(name) and not name.startswith("/") and ":" not in name.split("/", 1)[0]


def chain_of(image: Dict[str, Any]) -> List[Dict[str, Any]]:
    """query-block's image and its backing images, top first, filter nodes looked through: the disk is the
    image below a filter, where its overlay goes and what is copied."""
    out = []  # type: List[Dict[str, Any]]
    seen = 0
    while image and seen < 256:
        if image.get("format") not in FILTERS:
            out.append(image)
        image, seen = image.get("backing-image") or {}, seen + 1
    return out


def top_file(ins: Dict[str, Any]) -> str:
    """The image the disk's guest writes to: its chain's top, below any filter node."""
    chain = chain_of(ins.get("image") or {})
    return chain[0].get("filename", "") if chain else ins.get("file", "")


def device_key(dev: Dict[str, Any]) -> str:
    return dev.get("device") or dev.get("qdev") or "?"


def inserted(qmp: QmpClient) -> Dict[str, Dict[str, Any]]:
    return {device_key(dev): dev["inserted"] for dev in absolute_names(qmp, qmp.execute("query-block"))
            if dev.get("inserted")}


def format_node(nodes: List[Dict[str, Any]], filename: Optional[str], fmt: Optional[str]) -> Optional[str]:
    """The format node (not the protocol node below it) of an image file."""
    for n in nodes:
        if n.get("file") == filename and n.get("drv") == fmt and n.get("node-name"):
            return n["node-name"]
    return None
