"""python3 -m esxisim ...: build and drive a simulated host from a shell or a test."""
import argparse
import json
import os
import sys

from . import crond, disks, snapshots, writer
from .host import Host, NotFound, parse_size


def parse_disk(spec):
    out = {}
    for part in spec.split(","):
        if not part:
            continue
        k, _, v = part.partition("=")
        if k not in ("size", "format", "bus", "mode", "datastore", "rdm", "controller"):
            raise argparse.ArgumentTypeError("unknown disk key %r" % k)
        out[k] = v
    if out.get("format", "thin") not in ("thin", "zeroedthick", "eagerzeroedthick", "2gbsparse"):
        raise argparse.ArgumentTypeError("bad format %s" % out["format"])
    return out


def build_parser():
    p = argparse.ArgumentParser(prog="python3 -m esxisim", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a host directory")
    c.add_argument("host")
    c.add_argument("--version", default="7.0.3")
    c.add_argument("--hostname", default="esxi01")
    c.add_argument("--nfs-root")
    c.add_argument("--no-crond", action="store_true")
    d = sub.add_parser("datastore", help="add a VMFS datastore")
    d.add_argument("host")
    d.add_argument("name")
    d.add_argument("--capacity", default="20G")
    d.add_argument("--vmfs", type=int, choices=(5, 6), default=6)
    n = sub.add_parser("nfs", help="mount an NFS datastore (same as esxcli storage nfs add)")
    n.add_argument("host")
    n.add_argument("name")
    n.add_argument("server")
    n.add_argument("share")
    n.add_argument("--capacity", default="100G")
    v = sub.add_parser("vm", help="create and register a VM; prints its vmid")
    v.add_argument("host")
    v.add_argument("name")
    v.add_argument("--datastore", required=True)
    v.add_argument("--disk", action="append", type=parse_disk, default=None)
    v.add_argument("--power", choices=("on", "off"), default="off")
    v.add_argument("--writer", action="store_true")
    v.add_argument("--snapshot", action="append", default=[])
    v.add_argument("--nvram", dest="nvram", action="store_true", default=True)
    v.add_argument("--no-nvram", dest="nvram", action="store_false")
    v.add_argument("--vmxf", action="store_true")
    v.add_argument("--no-tools", action="store_true")
    v.add_argument("--guest-os", default="centos7_64Guest")
    v.add_argument("--hw", type=int, default=19)
    v.add_argument("--annotation")
    w = sub.add_parser("writer", help="start/stop guest writers")
    w.add_argument("host")
    w.add_argument("action", choices=("start", "stop"))
    w.add_argument("name", nargs="?")
    w.add_argument("--all", action="store_true")
    wl = sub.add_parser("writer-log", help="print a VM's writer log (JSON lines)")
    wl.add_argument("host")
    wl.add_argument("name")
    f = sub.add_parser("fault", help="set or clear injected faults")
    f.add_argument("host")
    f.add_argument("action", choices=("set", "clear", "show"))
    f.add_argument("pairs", nargs="*")
    s = sub.add_parser("shell", help="run a command on the host (inside its namespace)")
    s.add_argument("host")
    s.add_argument("command", nargs=argparse.REMAINDER)
    st = sub.add_parser("state", help="show VMs, power states, snapshot trees, files")
    st.add_argument("host")
    st.add_argument("--json", action="store_true")
    sp = sub.add_parser("stop", help="stop all background processes of a host")
    sp.add_argument("host")
    ds = sub.add_parser("destroy", help="stop everything and delete the host directory")
    ds.add_argument("host")
    return p


def state_dict(host):
    out = {"version": host.version, "datastores": host.datastores(), "vms": {}}
    for vmid, v in host.vms().items():
        info = dict(v, valid=host.is_valid(vmid))
        if info["valid"]:
            info["name"] = host.display_name(vmid)
            info["disks"] = [{"node": n, "file": p, "mode": m} for n, p, m in host.vm_disks(vmid)]
            info["snapshots"] = [{"depth": d, "id": s["uid"], "name": s["name"], "disks": s["disks"]}
                                 for d, s in snapshots.tree(host, vmid)]
            folder = os.path.dirname(host.vmx_real(vmid))
            info["files"] = sorted(os.listdir(folder))
        out["vms"][vmid] = info
    out["faults"] = host.faults()
    out["crond"] = crond.log(host)[-3:]
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        rc = run(args)
    except NotFound as e:
        sys.stderr.write("esxisim: not found: %s\n" % e)
        rc = 2
    except (FileExistsError, ValueError) as e:
        sys.stderr.write("esxisim: %s\n" % e)
        rc = 2
    sys.exit(rc)


def run(args):
    if args.cmd == "create":
        Host.create(args.host, args.version, args.hostname, args.nfs_root, crond=not args.no_crond)
        return 0
    host = Host(args.host)
    if not host.store.exists():
        raise NotFound("no simulated host at %s" % args.host)
    if args.cmd == "datastore":
        print(host.add_datastore(args.name, parse_size(args.capacity), args.vmfs))
    elif args.cmd == "nfs":
        print(host.add_nfs(args.name, args.server, args.share, parse_size(args.capacity)))
    elif args.cmd == "vm":
        print(host.create_vm(args.name, args.datastore, args.disk, args.power, args.writer, args.snapshot,
                             args.nvram, args.vmxf, args.guest_os, args.hw, not args.no_tools, args.annotation))
    elif args.cmd == "writer":
        ids = list(host.vms()) if args.all else [host.vmid_by_name(args.name)]
        for vmid in ids:
            if args.action == "start":
                if host.power_state(vmid) != "on":
                    host.power_on(vmid)
                writer.start(host, vmid)
            else:
                writer.stop(host, vmid)
    elif args.cmd == "writer-log":
        for rec in host.writer_log(args.name):
            print(json.dumps(rec, sort_keys=True))
    elif args.cmd == "fault":
        if args.action == "clear":
            host.clear_faults()
        elif args.action == "set":
            for pair in args.pairs:
                k, _, v = pair.partition("=")
                host.set_fault(k, v)
        print(json.dumps(host.faults(), indent=1, sort_keys=True))
    elif args.cmd == "shell":
        from .namespace import shell
        cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
        return shell(host.root, cmd)
    elif args.cmd == "state":
        data = state_dict(host)
        if args.json:
            print(json.dumps(data, indent=1, sort_keys=True))
        else:
            print_state(data)
    elif args.cmd == "stop":
        host.stop()
    elif args.cmd == "destroy":
        host.destroy()
    return 0


def print_state(data):
    print("ESXi %s" % data["version"])
    for name, ds in sorted(data["datastores"].items()):
        print("datastore %-16s %s %s capacity=%d" % (name, ds["type"], ds["uuid"], ds["capacity"]))
    for vmid, v in sorted(data["vms"].items(), key=lambda kv: int(kv[0])):
        if not v["valid"]:
            print("vm %s INVALID %s" % (vmid, v["vmx"]))
            continue
        print("vm %s %r power=%s writer=%s %s" % (vmid, v["name"], v["power"], v.get("writer_pid"), v["vmx"]))
        for d in v["disks"]:
            print("   disk %s %s (%s)" % (d["node"], d["file"], d["mode"]))
        for s in v["snapshots"]:
            print("   %ssnapshot %d %r" % ("  " * s["depth"], s["id"], s["name"]))
        print("   files: %s" % ", ".join(v["files"]))
    if data["faults"]:
        print("faults: %s" % json.dumps(data["faults"], sort_keys=True))


_ = disks
