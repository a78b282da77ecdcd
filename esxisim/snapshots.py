"""Snapshot trees like hostd keeps them: the .vmsd holds the tree, each disk gets a delta.

Consolidation is done under the VM lock so a guest write never lands half in a delta
that is being merged away (ESXi stuns the VM for the same reason).
"""
import os
import time

from . import vmx

# checkpoint, disks and writer (with struct and the sparse formats) are imported by the functions
# that change disks: `snapshot.get`, the commonest call, only reads the .vmsd.

TYPE_MEMORY = "1"


def _vmsd_path(host, vmid):
    return os.path.splitext(host.vmx_real(vmid))[0] + ".vmsd"  # <name>.vmx, a template's <name>.vmtx


def load(host, vmid):
    path = _vmsd_path(host, vmid)
    data = vmx.load(path) if os.path.exists(path) else {}
    meta = {"lastUID": int(data.get("snapshot.lastUID", "0") or 0),
            "current": int(data.get("snapshot.current", "0") or 0),
            "needConsolidate": data.get("snapshot.needConsolidate", "").upper() == "TRUE"}
    snaps = []
    for i in range(int(data.get("snapshot.numSnapshots", "0") or 0)):
        p = "snapshot%d." % i
        if p + "uid" not in data:
            continue
        hi, lo = int(data.get(p + "createTimeHigh", "0")), int(data.get(p + "createTimeLow", "0"))
        snaps.append({
            "uid": int(data[p + "uid"]), "parent": int(data.get(p + "parent", "0") or 0),
            "filename": data.get(p + "filename", ""), "name": data.get(p + "displayName", ""),
            "description": data.get(p + "description", ""),
            "time": ((hi << 32) | (lo & 0xFFFFFFFF)) / 1e6,
            "memory": data.get(p + "type") == TYPE_MEMORY,
            "quiesced": data.get(p + "quiesced", "FALSE") == "TRUE",
            "state": data.get(p + "esxisim.state", "powered off"),
            "disks": [(data.get(p + "disk%d.node" % j), data.get(p + "disk%d.fileName" % j))
                      for j in range(int(data.get(p + "numDisks", "0")))],
        })
    return meta, snaps


def save(host, vmid, meta, snaps):
    data = vmx.parse("")
    data[".encoding"] = "UTF-8"
    data["snapshot.lastUID"] = str(meta["lastUID"])
    if snaps:
        data["snapshot.current"] = str(meta["current"])
    if meta.get("needConsolidate"):
        data["snapshot.needConsolidate"] = "TRUE"
    for i, s in enumerate(snaps):
        p = "snapshot%d." % i
        data[p + "uid"] = str(s["uid"])
        if s["parent"]:
            data[p + "parent"] = str(s["parent"])
        data[p + "filename"] = s["filename"]
        data[p + "displayName"] = s["name"]
        if s["description"]:
            data[p + "description"] = s["description"]
        if s["memory"]:
            data[p + "type"] = TYPE_MEMORY
        if s["quiesced"]:
            data[p + "quiesced"] = "TRUE"
        us = int(s["time"] * 1e6)
        data[p + "createTimeHigh"] = str(us >> 32)
        lo = us & 0xFFFFFFFF
        data[p + "createTimeLow"] = str(lo - (1 << 32) if lo >= 1 << 31 else lo)
        data[p + "esxisim.state"] = s["state"]
        data[p + "numDisks"] = str(len(s["disks"]))
        for j, (node, fn) in enumerate(s["disks"]):
            data[p + "disk%d.fileName" % j] = fn
            data[p + "disk%d.node" % j] = node
    if snaps:
        data["snapshot.numSnapshots"] = str(len(snaps))
    vmx.save(_vmsd_path(host, vmid), data)


def _abs(folder, fn):
    return fn if fn.startswith("/") else os.path.join(folder, fn)


def _rel(folder, path):
    return os.path.basename(path) if os.path.dirname(path) == folder else path


def _is_rdmp(host, path):
    from . import disks
    try:
        return disks.disk_format(host.real(path)) == "rdmp"
    except (OSError, ValueError):
        return False


class SnapshotError(Exception):
    pass


def create(host, vmid, name, description="", memory=False, quiesce=False):
    from . import checkpoint, disks, writer
    vmid = str(vmid)
    vmx_host = host.vm(vmid)["vmx"]
    folder = os.path.dirname(vmx_host)
    if quiesce and not host.tools_running(vmid) and host.power_state(vmid) == "on":
        raise SnapshotError("tools")
    with host.store.vm_lock(vmx_host):
        meta, snaps = load(host, vmid)
        data = host.load_vmx(vmid)
        taken = []
        for node, cur, mode in host.vm_disks(vmid):
            if "independent" in mode or _is_rdmp(host, cur):
                continue
            _dsname, ds = host.ds_of_path(cur)
            ses = bool(ds and ds.get("type") == "VMFS" and ds.get("vmfs") == 6)
            delta = disks.create_delta(host.real(cur), ses)
            data[node + ".fileName"] = _rel(folder, host.host_path(delta))
            taken.append((node, _rel(folder, cur)))
        uid = meta["lastUID"] + 1
        on = host.power_state(vmid) == "on"
        stem = os.path.basename(vmx_host)[:-4]
        vmsn = "%s-Snapshot%d.vmsn" % (stem, uid)
        with open(os.path.join(os.path.dirname(host.vmx_real(vmid)), vmsn), "wb") as f:
            f.write(checkpoint.render(vmx.render(data)))
        snaps.append({"uid": uid, "parent": meta["current"] if any(s["uid"] == meta["current"] for s in snaps) else 0,
                      "filename": vmsn, "name": name, "description": description, "time": time.time(),
                      "memory": bool(memory and on), "quiesced": bool(quiesce and on),
                      "state": "powered on" if on and (memory or quiesce) else "powered off",
                      "disks": taken})
        meta["lastUID"] = uid
        meta["current"] = uid
        vmx.save(host.vmx_real(vmid), data)
        save(host, vmid, meta, snaps)
        writer.log_event(host, vmid, "snapshot.create", id=uid, name=name,
                         disks={n: os.path.join(folder, f) if not f.startswith("/") else f for n, f in taken})
    return uid


def _references(host, vmid, snaps, exclude_uid=None):
    folder = os.path.dirname(host.vm(vmid)["vmx"])
    refs = [p for _n, p, _m in host.vm_disks(vmid)]
    for s in snaps:
        if s["uid"] != exclude_uid:
            refs += [_abs(folder, fn) for _n, fn in s["disks"]]
    return refs


def _chain(host, path):
    from . import disks
    out = []
    p = path
    while p:
        out.append(os.path.normpath(p))
        try:
            par = disks.parent_of(host.real(p))
        except OSError:
            break
        p = host.host_path(par) if par else None
    return out


def remove(host, vmid, uid, delay=0.0, commit=True):
    """hostd's RemoveSnapshot task. commit=False is the removal VMware documents as leaving the VM
    "Needs Consolidation": the snapshot leaves the tree (.vmsd, its .vmsn), but its delta is not
    committed into the parent, so the .vmx stays on it; the .vmsd says `snapshot.needConsolidate`."""
    from . import disks, writer
    vmid = str(vmid)
    meta, snaps = load(host, vmid)
    target = next((s for s in snaps if s["uid"] == uid), None)
    if target is None:
        raise KeyError(uid)
    if delay:
        time.sleep(delay)
    vmx_host = host.vm(vmid)["vmx"]
    folder = os.path.dirname(vmx_host)
    with host.store.vm_lock(vmx_host):
        meta, snaps = load(host, vmid)
        # hostd's task finds its snapshot by id when it runs: one removed meanwhile is NotFound
        # (guess: no sample of two removals of one snapshot), and a snapshot taken meanwhile is
        # not merged by what the tree looked like before
        target = next((s for s in snaps if s["uid"] == uid), None)
        if target is None:
            raise KeyError(uid)
        others = [s for s in snaps if s["uid"] != uid]
        refs = _references(host, vmid, snaps, exclude_uid=uid)
        data = host.load_vmx(vmid)
        for node, fn in target["disks"] if commit else ():
            frozen = os.path.normpath(_abs(folder, fn))
            children = set()
            for r in refs:
                ch = _chain(host, r)
                for i in range(1, len(ch)):
                    if ch[i] == frozen:
                        children.add(ch[i - 1])
            if len(children) != 1:
                continue  # branched tree: keep the frozen disk, drop only the metadata
            child = children.pop()
            if not disks.is_delta(host.real(child)):
                continue
            disks.merge_into_parent(host.real(child))
            all_files = set()
            for r in refs:
                all_files.update(_chain(host, r))
            disks.repoint_children(host.real(child), host.real(frozen), [host.real(f) for f in all_files])
            disks.delete(host.real(child))
            for k, v in list(data.items()):
                if k.endswith(".fileName") and os.path.normpath(_abs(folder, v)) == child:
                    data[k] = _rel(folder, frozen)
            for s in others:
                s["disks"] = [(n, _rel(folder, frozen) if os.path.normpath(_abs(folder, f)) == child else f)
                              for n, f in s["disks"]]
        for s in others:
            if s["parent"] == uid:
                s["parent"] = target["parent"]
        if meta["current"] == uid:
            meta["current"] = target["parent"]
        meta["needConsolidate"] = meta["needConsolidate"] or not commit
        vmsn = os.path.join(os.path.dirname(host.vmx_real(vmid)), target["filename"])
        if os.path.exists(vmsn):
            os.unlink(vmsn)
        vmx.save(host.vmx_real(vmid), data)
        save(host, vmid, meta, others)
        writer.log_event(host, vmid, "snapshot.remove", id=uid)


def remove_all(host, vmid, delay=0.0, commit=True):
    """hostd's RemoveAllSnapshots task: every chain of the current state merged into its base. commit=False:
    the tree goes, the disks stay on their deltas (as remove's). A committing one consolidates a VM that
    needed it too, when it has a snapshot to remove (take one first: guess, the usual advice without vCenter)."""
    from . import disks, writer
    vmid = str(vmid)
    if delay:
        time.sleep(delay)
    vmx_host = host.vm(vmid)["vmx"]
    folder = os.path.dirname(vmx_host)
    with host.store.vm_lock(vmx_host):
        meta, snaps = load(host, vmid)
        if not snaps:
            return
        refs = _references(host, vmid, snaps)
        doomed = set()
        for r in refs:
            doomed.update(p for p in _chain(host, r) if disks.is_delta(host.real(p)))
        data = host.load_vmx(vmid)
        for node, cur, _mode in host.vm_disks(vmid) if commit else ():
            ch = _chain(host, cur)
            base = ch[-1]
            for d in reversed(ch[:-1]):  # oldest delta first, newer ones override
                disks.merge_into(host.real(d), host.real(base))
            if len(ch) > 1:
                data[node + ".fileName"] = _rel(folder, base)
        for d in doomed if commit else ():
            disks.delete(host.real(d))
        for s in snaps:
            p = os.path.join(os.path.dirname(host.vmx_real(vmid)), s["filename"])
            if os.path.exists(p):
                os.unlink(p)
        vmx.save(host.vmx_real(vmid), data)
        meta["current"] = 0
        meta["needConsolidate"] = not commit
        save(host, vmid, meta, [])
        writer.log_event(host, vmid, "snapshot.removeall")


def revert(host, vmid, uid):
    from . import disks, writer
    vmid = str(vmid)
    vmx_host = host.vm(vmid)["vmx"]
    folder = os.path.dirname(vmx_host)
    meta, snaps = load(host, vmid)
    target = next((s for s in snaps if s["uid"] == uid), None)
    if target is None:
        raise KeyError(uid)
    if target["state"] != "powered on" and host.power_state(vmid) != "off":
        host.power_off(vmid)
    with host.store.vm_lock(vmx_host):
        referenced = {os.path.normpath(_abs(folder, f)) for s in snaps for _n, f in s["disks"]}
        data = host.load_vmx(vmid)
        for node, fn in target["disks"]:
            cur = data.get(node + ".fileName")
            if cur:
                cur_abs = os.path.normpath(_abs(folder, cur))
                if cur_abs not in referenced and disks.is_delta(host.real(cur_abs)):
                    disks.delete(host.real(cur_abs))
            _n, ds = host.ds_of_path(_abs(folder, fn))
            ses = bool(ds and ds.get("type") == "VMFS" and ds.get("vmfs") == 6)
            delta = disks.create_delta(host.real(_abs(folder, fn)), ses)
            data[node + ".fileName"] = _rel(folder, host.host_path(delta))
        vmx.save(host.vmx_real(vmid), data)
        meta["current"] = uid
        save(host, vmid, meta, snaps)
        writer.log_event(host, vmid, "snapshot.revert", id=uid)


def tree(host, vmid):
    """[(depth, snapshot)] in display order (pre-order, children by uid)."""
    _meta, snaps = load(host, vmid)
    by_parent = {}
    for s in snaps:
        by_parent.setdefault(s["parent"], []).append(s)
    out = []

    def walk(parent, depth):
        for s in sorted(by_parent.get(parent, []), key=lambda x: x["uid"]):
            out.append((depth, s))
            walk(s["uid"], depth + 1)
    walk(0, 0)
    return out
