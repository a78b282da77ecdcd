"""esxcli (storage filesystem/nfs, system version/hostname/module) and `vmware -v/-l`.

esxcli tables: columns as wide as the longest cell or title, two spaces apart, a dashed
rule under the titles, numbers and booleans right-aligned (esxcli's table formatter).
"""
import sys

from . import faults, versions


def out(text):
    sys.stdout.write(text)
    sys.stdout.flush()


def table(titles, rows, right=()):
    widths = [max([len(t)] + [len(str(r[i])) for r in rows]) for i, t in enumerate(titles)]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def kv(pairs):
    return "".join("   %s: %s\n" % p for p in pairs)


def main(host, args):
    words = [a for a in args if not a.startswith("--formatter")]
    lead = []
    for w in words:
        if w.startswith("-"):
            break
        lead.append(w)
    cmd = " ".join(lead)
    opts = {}
    it = iter(words)
    for a in it:
        if a.startswith("-"):
            if "=" in a:
                k, v = a.split("=", 1)
                opts[k.lstrip("-")] = v
            else:
                opts[a.lstrip("-")] = next(it, "")
    st = host.state()
    ver = st["version"]
    build, _level, update, patch = versions.info(ver)
    if versions.older(ver, 5, 0) and lead[:1] in (["system"], ["storage"]):
        # esxcli of ESX(i) 4.x had no system/storage namespaces (they came with 5.0); text: guess
        out("Error: Unknown command or namespace %s\n" % lead[0])
        return 1
    if cmd == "system version get":
        out(kv([("Product", "VMware ESXi"), ("Version", ver), ("Build", "Releasebuild-%s" % build),
                ("Update", update), ("Patch", patch)]))
        return 0
    if cmd == "system hostname get":
        hn = st["hostname"]
        out(kv([("Domain Name", "localdomain"), ("Fully Qualified Domain Name", hn + ".localdomain"),
                ("Host Name", hn)]))
        return 0
    if cmd == "storage filesystem list":
        rows = []
        for name, ds in sorted(host.datastores().items()):
            typ = "VMFS-%d" % ds["vmfs"] if ds["type"] == "VMFS" else host.api_type(ds)
            rows.append(["/vmfs/volumes/" + ds["uuid"], name, ds["uuid"], "true", typ, ds["capacity"],
                         host.ds_free(name)])
        out(table(["Mount Point", "Volume Name", "UUID", "Mounted", "Type", "Size", "Free"], rows, right=(3, 5, 6)))
        return 0
    if cmd == "storage nfs list":
        rows = []
        for name, ds in sorted(host.datastores().items()):
            if host.api_type(ds) == "NFS":  # 4.1 mounts are listed by `esxcli storage nfs41 list`
                rows.append([name, ds["server"], ds["share"], "true", "true",
                             "true" if ds.get("readonly") else "false", "false", "Not Supported"])
        out(table(["Volume Name", "Host", "Share", "Accessible", "Mounted", "Read-Only", "isPE",
                   "Hardware Acceleration"], rows, right=(3, 4, 5, 6)))
        return 0
    if cmd == "storage nfs41 list":
        rows = [[name, ds["server"], ds["share"], "true", "true", "true" if ds.get("readonly") else "false",
                 "AUTH_SYS", "false", "Not Supported"]
                for name, ds in sorted(host.datastores().items()) if host.api_type(ds) == "NFS41"]
        out(table(["Volume Name", "Host(s)", "Share", "Accessible", "Mounted", "Read-Only", "Security", "isPE",
                   "Hardware Acceleration"], rows, right=(3, 4, 5, 7)))
        return 0
    if cmd == "storage nfs add":
        name = opts.get("v") or opts.get("volume-name")
        server = opts.get("H") or opts.get("host")
        share = opts.get("s") or opts.get("share")
        if not (name and server and share):
            out("Error: Missing required parameter -H|--host\n" if not server else
                "Error: Missing required parameter -s|--share\n" if not share else
                "Error: Missing required parameter -v|--volume-name\n")
            return 1
        if faults.get(host, "nfs.mount") == "fail":
            out("Error performing operation: NFS Error: Unable to Mount filesystem: Unable to connect to NFS server.\n")  # guess
            return 1
        try:
            host.add_nfs(name, server, share, readonly="r" in opts or "readonly" in opts)
        except FileExistsError:
            out("Unable to add NFS datastore: A specified parameter was not correct: Volume name already exists\n")  # guess
            return 1
        return 0
    if cmd == "storage nfs remove":
        name = opts.get("v") or opts.get("volume-name")
        ds = host.datastore_by_name(name) if name else None
        if not ds or ds["type"] != "NFS":  # NAS volumes only: a VMFS volume's name is no NFS volume's
            out("Error performing operation: NFS Error: Unable to Unmount filesystem: Volume not found\n")  # guess
            return 1
        host.remove_datastore(name)
        return 0
    if cmd == "system module load":
        name = opts.get("m") or opts.get("module")
        if not name:
            out("Error: Missing required parameter -m|--module\n")
            return 1
        if name not in host.KNOWN_MODULES:
            out("Unable to load module /usr/lib/vmware/vmkmod/%s: Not found\n" % name)  # guess
            return 1
        if host.module_loaded(name):
            out("Unable to load module /usr/lib/vmware/vmkmod/%s: Busy\n" % name)  # guess
            return 1
        host.set_module(name, True)
        return 0
    if cmd == "system module list":
        # only loaded modules are listed: ghettoVCB greps this list for multiextent and loads
        # the module when the grep finds nothing
        rows = [[m, "true", "true"] for m in sorted(host.KNOWN_MODULES) if host.module_loaded(m)]
        out(table(["Name", "Is Loaded", "Is Enabled"], rows, right=(1, 2)))
        return 0
    out("Error: Unknown command or namespace %s\n" % cmd)
    return 1


def vmware_main(host, args):
    ver = host.version
    build, level, _u, _p = versions.info(ver)
    flags = "".join(a.lstrip("-") for a in args)
    if not flags or not set(flags) <= set("vl"):
        out("Usage: vmware [-v|-l]\n")  # guess
        return 1
    if "v" in flags:
        out("VMware ESXi %s build-%s\n" % (ver, build))
    if "l" in flags:
        out("VMware ESXi %s\n" % level)
    return 0
