"""The simulated host: datastores, VM inventory and power states, on top of state.Store.

Every tool (vim-cmd, vmkfstools, esxcli, the writer) goes through this class, so the
CLI, the Python API and the in-namespace tools all see one truth.
"""
import os
import time

from . import versions
from .state import Store

# disks, hashlib, random, re, shutil, toolgen and vmx are imported by the methods that use them:
# every vim-cmd, vmkfstools and esxcli call loads this module, and most of them need none of those.

GUEST_IDS = {  # .vmx guestOS -> API guestId (what getallvms shows)
    "ubuntu-64": "ubuntu64Guest", "other-64": "otherGuest64", "otherlinux-64": "otherLinux64Guest",
    "windows9-64": "windows9_64Guest", "windows9srv-64": "windows9Server64Guest",
    "centos7-64": "centos7_64Guest", "centos8-64": "centos8_64Guest", "rhel8-64": "rhel8_64Guest",
    "rhel9-64": "rhel9_64Guest", "debian10-64": "debian10_64Guest", "debian11-64": "debian11_64Guest",
    "other": "otherGuest", "otherlinux": "otherLinuxGuest",
}
VMX_PID_BASE = 2099500  # the pid before the first vmx's of a host (a real host's vmx pids are of this size)
GUEST_FULL = {"centos7_64Guest": "CentOS 7 (64-bit)", "debian11_64Guest": "Debian GNU/Linux 11 (64-bit)"}


def guest_id(vmx_guest):
    if vmx_guest in GUEST_IDS:
        return GUEST_IDS[vmx_guest]
    return vmx_guest.replace("-64", "_64") + "Guest"


def vmx_guest(value):
    """Accept either form for --guest-os; store the .vmx form."""
    for k, v in GUEST_IDS.items():
        if value == v:
            return k
    if value.endswith("Guest"):
        return value[:-5].replace("_64", "-64")
    return value


def _volume(path):
    """(name, rest) of /vmfs/volumes/<name><rest>, else None; as the pattern
    ^/vmfs/volumes/([^/]+)(/.*)?$ splits it (rest "" for none; `.` stops at a line feed,
    `$` matches before a final one)."""
    if not path.startswith("/vmfs/volumes/"):
        return None
    name, slash, rest = path[len("/vmfs/volumes/"):].partition("/")
    if not name:
        return None
    if "\n" in rest:
        if rest.index("\n") != len(rest) - 1:
            return None
        rest = rest[:-1]
    return name, slash + rest


def xml_escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class NotFound(Exception):
    pass


class PowerOnFailed(Exception):
    """The vmx could not start the VM (a disk it names cannot be opened)."""


class Host:
    def __init__(self, path):
        self.store = Store(path)
        self.root = self.store.root
        self._in_namespace = None  # whether /vmfs is HOST/vmfs here (_inside), asked once

    # ------------------------------------------------------------------ paths
    def real(self, path):
        """Real filesystem path of a path as seen on the host (/vmfs/... lives under HOST). Inside the
        host's own namespace (enter.py binds HOST/vmfs on /vmfs) that is the path itself, so what is
        mounted on a datastore there (a test's small tmpfs) is what the tools see, as ESXi's see it."""
        path = os.path.normpath(path)
        if path == "/vmfs" or path.startswith("/vmfs/"):
            return path if self._inside() else self.root + path
        return path

    def _inside(self):
        """Whether this process runs in the host's namespace: its /vmfs is HOST/vmfs."""
        if self._in_namespace is None:
            try:
                here, there = os.stat("/vmfs"), os.stat(self.root + "/vmfs")
                self._in_namespace = (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
            except OSError:
                self._in_namespace = False
        return self._in_namespace

    def host_path(self, real):
        real = os.path.normpath(real)
        if real.startswith(self.root + "/vmfs"):
            return real[len(self.root):]
        return real

    def canonical(self, path):
        """/vmfs/volumes/<name>/x -> /vmfs/volumes/<uuid>/x (ESXi stores the uuid form)."""
        path = os.path.normpath(path)
        vol = _volume(path)
        if not vol:
            return path
        ds = self.datastore_by_name(vol[0]) or self.datastore_by_uuid(vol[0])
        if not ds:
            return path
        return "/vmfs/volumes/%s%s" % (ds["uuid"], vol[1])

    def state(self):
        return self.store.read()

    @property
    def version(self):
        return self.state()["version"]

    # ------------------------------------------------------------------ create
    @classmethod
    def create(cls, path, version="7.0.3", hostname="esxi01", nfs_root=None, crond=True):
        import random
        from . import toolgen
        versions.info(version)
        h = cls(path)
        if h.store.exists():
            raise FileExistsError("%s already holds a simulated host" % path)
        os.makedirs(h.store.p("vmfs", "volumes"), exist_ok=True)
        os.makedirs(h.store.p("state", "locks"), exist_ok=True)
        mac = "%012x" % random.getrandbits(48)
        nfs_root = os.path.abspath(nfs_root or h.store.p("nfs"))
        os.makedirs(nfs_root, exist_ok=True)
        h.store.write({"version": version, "hostname": hostname, "mac": mac, "nfs_root": nfs_root,
                       "datastores": {}, "vms": {}, "next_vmid": 1, "crond": [], "boot_time": time.time()})
        from .enter import HOSTNAME_FILE
        with open(os.path.join(h.root, HOSTNAME_FILE), "w", encoding="utf-8") as f:
            f.write(hostname + "\n")  # the same name for enter.c, which reads no JSON
        toolgen.install(h)
        h.write_inventory()
        if crond:
            from . import crond as crond_mod
            crond_mod.start(h)
        return h

    # ------------------------------------------------------------------ datastores
    def datastore_by_name(self, name):
        return self.state()["datastores"].get(name)

    def datastore_by_uuid(self, uuid):
        for name, ds in self.state()["datastores"].items():
            if ds["uuid"] == uuid:
                return dict(ds, name=name)
        return None

    def datastores(self):
        return self.state()["datastores"]

    def add_datastore(self, name, capacity=20 << 30, vmfs=6):
        import random
        st = self.state()
        if name in st["datastores"]:
            raise FileExistsError("datastore %s exists" % name)
        u = "%08x-%08x-%04x-%s" % (random.getrandbits(32), random.getrandbits(32), random.getrandbits(16), st["mac"])
        os.makedirs(self.store.p("vmfs", "volumes", u))
        os.symlink(u, self.store.p("vmfs", "volumes", name))
        with self.store.edit() as s:
            s["datastores"][name] = {"uuid": u, "type": "VMFS", "vmfs": int(vmfs), "capacity": int(capacity)}
        return u

    def add_nfs(self, name, server, share, capacity=100 << 30, readonly=False, version="nfs"):
        """NFS datastore; version "nfs" (v3) or "nfsv41" (4.1, API type NFS41)."""
        import hashlib
        st = self.state()
        if name in st["datastores"]:
            raise FileExistsError(name)
        target = os.path.join(st["nfs_root"], server, share.strip("/"))
        os.makedirs(target, exist_ok=True)
        u = hashlib.md5(("%s:%s" % (server, share)).encode()).hexdigest()
        u = "%s-%s" % (u[:8], u[8:16])
        link = self.store.p("vmfs", "volumes", u)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
        os.symlink(u, self.store.p("vmfs", "volumes", name))
        with self.store.edit() as s:
            s["datastores"][name] = {"uuid": u, "type": "NFS", "server": server, "share": share,
                                     "capacity": int(capacity), "readonly": bool(readonly)}
            if version == "nfsv41":
                s["datastores"][name]["nfs_version"] = version
        return u

    @staticmethod
    def api_type(ds):
        """The vSphere API's datastore type: VMFS, NFS (v3) or NFS41."""
        return "NFS41" if ds.get("nfs_version") == "nfsv41" else ds["type"]

    def remove_datastore(self, name):
        ds = self.datastore_by_name(name)
        if not ds:
            raise NotFound(name)
        if ds["type"] == "NFS":  # unmounted: the share's files stay on the server
            os.unlink(self.store.p("vmfs", "volumes", ds["uuid"]))
        else:  # the VMFS volume is deleted: its uuid folder goes with its files, as on ESXi
            import shutil
            shutil.rmtree(self.store.p("vmfs", "volumes", ds["uuid"]))
        os.unlink(self.store.p("vmfs", "volumes", name))
        with self.store.edit() as s:
            del s["datastores"][name]

    def vms_on(self, name):
        """The registered VMs with a file (their .vmx, a disk) on datastore `name`: what makes hostd refuse to
        remove a VMFS datastore (RemoveDatastore: ResourceInUse), where remove_datastore would delete them."""
        found = []
        for vmid, v in self.vms().items():
            paths = [v["vmx"]]
            try:
                paths += [path for _node, path, _mode in self.vm_disks(vmid)]
            except (NotFound, OSError, KeyError):
                pass  # unregistered since, or its .vmx unreadable: its home still counts
            if any(self.ds_of_path(path)[0] == name for path in paths):
                found.append(vmid)
        return found

    def ds_dir(self, name):
        return self.store.p("vmfs", "volumes", self.datastore_by_name(name)["uuid"])

    def ds_used(self, name):
        top = os.path.realpath(self.ds_dir(name))
        used = 0
        for dirpath, _dirs, files in os.walk(top):
            for fn in files:
                try:
                    used += os.lstat(os.path.join(dirpath, fn)).st_blocks * 512
                except OSError:
                    pass
        return used

    def ds_free(self, name):
        ds = self.datastore_by_name(name)
        return max(0, ds["capacity"] - self.ds_used(name))

    def ds_of_path(self, host_path):
        """(name, ds) of the datastore a host path lives on, or (None, None)."""
        c = self.canonical(host_path)
        uuid = c[len("/vmfs/volumes/"):].partition("/")[0] if c.startswith("/vmfs/volumes/") else ""
        if not uuid:
            return None, None
        ds = self.datastore_by_uuid(uuid)
        return (ds["name"], ds) if ds else (None, None)

    def bracket_path(self, host_path):
        """/vmfs/volumes/<uuid>/a/b.vmx -> "[ds] a/b.vmx" (getallvms' File column)."""
        c = self.canonical(host_path)
        name, ds = self.ds_of_path(c)
        if not ds:
            return c
        return "[%s] %s" % (name, c.split("/", 4)[4] if c.count("/") >= 4 else "")

    # ------------------------------------------------------------------ inventory
    def vms(self):
        return self.state()["vms"]

    def vm(self, vmid):
        v = self.vms().get(str(vmid))
        if v is None:
            raise NotFound(str(vmid))
        return v

    def vmid_by_name(self, name):
        for vmid, v in self.vms().items():
            try:
                if self.display_name(vmid) == name:
                    return vmid
            except NotFound:
                continue  # unregistered since the inventory was read
        raise NotFound(name)

    def vmx_real(self, vmid):
        return self.real(self.vm(vmid)["vmx"])

    def load_vmx(self, vmid):
        from . import vmx
        return vmx.load(self.vmx_real(vmid))

    def display_name(self, vmid):
        try:
            return self.load_vmx(vmid).get("displayName", "")
        except OSError:
            return self.vm(vmid).get("name", "")

    def is_valid(self, vmid):
        return os.path.exists(self.vmx_real(vmid))

    def register(self, vmx_path, name=None, tools=True):
        from . import vmx
        import hashlib
        vmx_path = self.canonical(vmx_path)
        if not os.path.isfile(self.real(vmx_path)):
            raise NotFound(vmx_path)
        with self.store.edit() as s:
            for vid, v in s["vms"].items():
                if v["vmx"] == vmx_path:
                    raise FileExistsError(vid)
            # ESX(i) 4.x handed out multiples of 16 (registervm-unregister_01); 5.x+ count by one
            step = 16 if versions.older(s["version"], 5, 0) else 1
            vmid = str(s["next_vmid"] * step)
            s["next_vmid"] += 1
            s["vms"][vmid] = {"vmx": vmx_path, "power": "off", "tools": tools,
                              "seed": int(hashlib.sha1(vmx_path.encode()).hexdigest()[:8], 16),
                              "writer": False, "writer_pid": None}
        if name:
            data = vmx.load(self.real(vmx_path))
            data["displayName"] = name
            vmx.save(self.real(vmx_path), data)
        self.write_inventory()
        return vmid

    def to_template(self, vmid):
        """hostd's MarkAsTemplate (vim-cmd vmsvc/convert.toTemplate): a powered-off VM's <name>.vmx becomes
        <name>.vmtx, the template's configuration file (vSphere VM administration, "Virtual Machine Files"),
        and the inventory names it; getallvms lists it like a VM. False: the VM is not powered off."""
        vmid = str(vmid)
        if self.power_state(vmid) != "off":
            return False
        vmx_path = self.vm(vmid)["vmx"]
        if vmx_path.endswith(".vmx"):
            tpl = vmx_path[:-len(".vmx")] + ".vmtx"
            os.rename(self.real(vmx_path), self.real(tpl))
            with self.store.edit() as s:
                s["vms"][vmid]["vmx"] = tpl
            self.write_inventory()
        return True

    def is_template(self, vmid):
        return self.vm(vmid)["vmx"].endswith(".vmtx")

    def unregister(self, vmid):
        vmid = str(vmid)
        self.vm(vmid)
        from . import writer
        writer.stop(self, vmid)
        with self.store.edit() as s:
            del s["vms"][vmid]
        self.write_inventory()

    def write_inventory(self):
        """/etc/vmware/hostd/vmInventory.xml; rewritten in place (it sits in an overlay upper dir)."""
        path = self.store.p("root", "etc", "upper", "vmware", "hostd", "vmInventory.xml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lines = ["<ConfigRoot>"]
        for i, (vmid, v) in enumerate(sorted(self.vms().items(), key=lambda kv: int(kv[0]))):
            lines += ['  <ConfigEntry id="%04d">' % i, "    <objID>%s</objID>" % vmid,
                      "    <secDomain>%d</secDomain>" % (20 + int(vmid)),
                      "    <vmxCfgPath>%s</vmxCfgPath>" % xml_escape(v["vmx"]), "  </ConfigEntry>"]
        lines.append("</ConfigRoot>")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

    # ------------------------------------------------------------------ VMs
    def create_vm(self, name, datastore, disk_specs=None, power="off", writer=False, snapshots=(),
                  nvram=True, vmxf=False, guest_os="centos7_64Guest", hw=19, tools=True, annotation=None):
        from . import vmx
        import hashlib
        import random
        from . import disks
        if not self.datastore_by_name(datastore):
            raise NotFound("datastore %s" % datastore)
        disk_specs = disk_specs if disk_specs is not None else [{}]
        folder = os.path.join(self.ds_dir(datastore), name)
        os.makedirs(folder)
        seed = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
        rng = random.Random(seed)
        # ESXi derives uuid.bios from the host and the VM's path: two hosts' VMs of one name
        # differ (the disks' content stays seeded by the name alone, for the tests)
        uuid_rng = random.Random("%s|%s" % (self.root, folder))
        uuid_b = " ".join("%02x" % uuid_rng.getrandbits(8) for _ in range(16))
        uuid_b = uuid_b[:23] + "-" + uuid_b[24:]
        data = vmx.parse("")
        for k, v in [(".encoding", "UTF-8"), ("config.version", "8"), ("virtualHW.version", str(hw))]:
            data[k] = v
        if nvram:
            data["nvram"] = name + ".nvram"
        data.update([("pciBridge0.present", "TRUE"), ("svga.present", "TRUE"),
                     ("pciBridge4.present", "TRUE"), ("pciBridge4.virtualDev", "pcieRootPort"),
                     ("pciBridge4.functions", "8"), ("vmci0.present", "TRUE"), ("hpet0.present", "TRUE"),
                     ("floppy0.present", "FALSE"), ("numvcpus", "1"), ("memSize", "1024"),
                     ("powerType.powerOff", "default"), ("powerType.suspend", "soft"),
                     ("powerType.reset", "default"), ("tools.upgrade.policy", "manual"),
                     ("sched.cpu.units", "mhz")])
        counters = {"scsi": 0, "sata": 0, "ide": 0, "nvme": 0}
        ds_uuid = self.datastore_by_name(datastore)["uuid"]
        for i, spec in enumerate(disk_specs):
            bus = spec.get("bus", "scsi")
            n = counters[bus]
            if bus == "scsi" and n == 7:
                n += 1
            counters[bus] = n + 1
            if bus == "ide":
                node = "ide%d:%d" % (n // 2, n % 2)
            else:
                node = "%s0:%d" % (bus, n)
            ctl = node.split(":")[0]
            if ctl + ".present" not in data and bus != "ide":  # IDE controllers have no key (vmx_03)
                data[ctl + ".present"] = "TRUE"
                if bus == "scsi":
                    data[ctl + ".virtualDev"] = spec.get("controller", "pvscsi" if hw >= 13 else "lsilogic")
            fname = name + (".vmdk" if i == 0 else "_%d.vmdk" % i)
            dds = spec.get("datastore", datastore)
            if dds == datastore:
                dfolder, ref = folder, fname
            else:
                if not self.datastore_by_name(dds):
                    raise NotFound("datastore %s" % dds)
                dfolder = os.path.join(self.ds_dir(dds), name)
                os.makedirs(dfolder, exist_ok=True)
                ref = "/vmfs/volumes/%s/%s/%s" % (self.datastore_by_name(dds)["uuid"], name, fname)
            size = parse_size(spec.get("size", "32M"))
            path = os.path.join(dfolder, fname)
            if spec.get("rdm"):
                disks.create_rdm(path, size, spec["rdm"], rng)
            elif spec.get("format") == "2gbsparse":
                # a hosted-format disk (ESXi cannot power it on, but it can be registered and copied)
                tmp = os.path.join(dfolder, ".esxisim-tmp.vmdk")
                disks.create_base(tmp, size, "thin", "ide" if bus == "ide" else "lsilogic", hw,
                                  seed="%s:%s" % (seed, node), rng=rng)
                disks.clone(tmp, path, "2gbsparse", rng=rng)
                disks.delete(tmp)
            else:
                disks.create_base(path, size, spec.get("format", "thin"),
                                  "ide" if bus == "ide" else "lsilogic", hw, seed="%s:%s" % (seed, node), rng=rng)
            if bus == "scsi":
                data[node + ".deviceType"] = "scsi-hardDisk"
            data[node + ".fileName"] = ref
            if bus == "scsi":
                data["sched.%s.shares" % node] = "normal"
            mode = spec.get("mode", "persistent")
            if mode != "persistent":
                data[node + ".mode"] = mode
            data[node + ".present"] = "TRUE"
        data.update([("ethernet0.virtualDev", "vmxnet3"), ("ethernet0.networkName", "VM Network"),
                     ("ethernet0.addressType", "generated"), ("ethernet0.present", "TRUE"),
                     ("displayName", name), ("guestOS", vmx_guest(guest_os))])
        if annotation:
            data["annotation"] = annotation
        data.update([("toolScripts.afterPowerOn", "TRUE"), ("tools.syncTime", "FALSE"),
                     ("uuid.bios", uuid_b), ("uuid.location", uuid_b),
                     ("vc.uuid", " ".join("%02x" % rng.getrandbits(8) for _ in range(8)) + "-" +
                      " ".join("%02x" % rng.getrandbits(8) for _ in range(8))),
                     ("sched.swap.derivedName", "/vmfs/volumes/%s/%s/%s-%08x.vswp" % (ds_uuid, name, name, seed)),
                     ("migrate.hostlog", "./%s-%08x.hlog" % (name, seed)),
                     ("ethernet0.generatedAddress", "00:0c:29:%02x:%02x:%02x" % (rng.getrandbits(8), rng.getrandbits(8), rng.getrandbits(8))),
                     ("cleanShutdown", "TRUE"), ("softPowerOff", "FALSE")])
        if vmxf:
            data["extendedConfigFile"] = name + ".vmxf"
            with open(os.path.join(folder, name + ".vmxf"), "w", encoding="utf-8") as f:
                f.write('<?xml version="1.0"?>\n<Foundry>\n<VM>\n<VMId type="string">%s</VMId>\n'
                        '<ClientMetaData>\n<clientMetaDataAttributes/>\n<HistoryEventList/></ClientMetaData></VM></Foundry>\n'
                        % uuid_b)
        if nvram:
            with open(os.path.join(folder, name + ".nvram"), "wb") as f:
                f.write(hashlib.shake_256(("nvram:%s" % seed).encode()).digest(8684))
        open(os.path.join(folder, name + ".vmsd"), "w").close()
        vmx_real = os.path.join(folder, name + ".vmx")
        vmx.save(vmx_real, data)
        os.chmod(vmx_real, 0o755)
        vmid = self.register(self.host_path(vmx_real), tools=tools)
        if writer:
            with self.store.edit() as s:
                s["vms"][vmid]["writer"] = True
        from . import snapshots as snaps
        for sn in snapshots:
            snaps.create(self, vmid, sn, "", False, False)
        if power == "on":
            self.power_on(vmid)
        return vmid

    # ------------------------------------------------------------------ power
    def power_state(self, vmid):
        return self.vm(vmid)["power"]

    def set_power(self, vmid, state):
        with self.store.edit() as s:
            s["vms"][str(vmid)]["power"] = state

    def missing_disk(self, vmid):
        """The first disk of the VM whose descriptor, extent or parent chain is missing: (host
        path of the disk the .vmx names, reason), or None. A real vmx refuses to power on then."""
        from . import disks
        for _node, path, _mode in self.vm_disks(vmid):
            try:
                for f in disks.chain_files(self.real(path)):
                    if not os.path.exists(f):
                        return path, "The system cannot find the file specified"
            except (OSError, ValueError):
                return path, "The system cannot find the file specified"
        return None

    def power_on(self, vmid):
        """Power on, or refuse like the vmx does when a disk cannot be opened (PowerOnFailed)."""
        from . import writer
        self._start_vmware_log(vmid)
        missing = self.missing_disk(vmid)
        if missing:
            self._log_power_on_failure(vmid, *missing)
            raise PowerOnFailed(missing[0])
        if self.power_state(vmid) == "suspended":
            self._drop_suspended_state(vmid)  # resumed from it
        self.set_power(vmid, "on")
        if self.vm(vmid).get("writer"):
            writer.start(self, vmid)

    def _start_vmware_log(self, vmid):
        """What the VM's vmx process does as it starts, at every power on (a resume, a failed power on too):
        the old logs rotated, vmware.log -> vmware-1.log -> vmware-2.log ..., as many kept as the .vmx's
        `log.keepOld` says (6 by default; older ones deleted), and a new vmware.log opened with its first line
        (the vmx's pid and the time to the millisecond: no two power ons write the same one). Each power on starts
        a vmx process of its own, so its pid is another (the host's next: `last_vmx_pid`), whichever process of
        ours simulates it. The log is where the .vmx says (_vmx_log_path): none with `logging = "FALSE"`."""
        log = self._vmx_log_path(vmid)
        with self.store.edit() as s:
            pid = s["last_vmx_pid"] = s.get("last_vmx_pid", VMX_PID_BASE) + 1
        if log is None:
            return
        stem, ext = os.path.splitext(log)
        keep = _keep_old(self.load_vmx(vmid))
        names = [log] + ["%s-%d%s" % (stem, n, ext) for n in range(1, keep + 1)]
        if keep and os.path.exists(names[-1]):
            os.remove(names[-1])
        for older, newer in reversed(list(zip(names, names[1:]))):
            if os.path.exists(older):
                os.rename(older, newer)
        now = time.time()
        build = versions.info(self.version)[0]
        with open(log, "w", encoding="utf-8") as f:
            f.write(self._vmx_log_line("%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
                                                     int(now * 1000) % 1000),
                                       "Log for VMware ESX pid=%d version=%s build=build-%s option=Release"
                                       % (pid, self.version, build)))

    def _vmx_log_path(self, vmid):
        """The real path of the log the VM's vmx writes, as its .vmx's logging options say (VMware's VM logging
        options): none with `logging = "FALSE"`; `log.fileName`'s file, a path relative to the VM's folder or
        absolute, where it names one (its folder must exist: the vmx makes none, guess), else vmware.log in the
        VM's folder."""
        data = self.load_vmx(vmid)
        folder = os.path.dirname(self.vmx_real(vmid))
        if _vmx_value(data, "logging", "TRUE").strip().lower() in ("false", "0", "no"):
            return None
        name = _vmx_value(data, "log.fileName", "")
        path = self.real(os.path.join(folder if not name.startswith("/") else "", name or "vmware.log"))
        return path if os.path.isdir(os.path.dirname(path)) else None
    def _vmx_log_line(self, ts, message):
        """A line of the vmx thread in vmware.log, in the host's version's format: 7.x (and older)
        `<ts>| vmx| I005: <message>`; 8.x the RFC 5424 style header `<ts> In(05) vmx - <message>`
        (VMware, vSphere 8 "Log File Formats", ESXi 8 log message format: TIMESTAMP SP SEVERITY SP
        THREAD-NAME SP OPID SP MSG)."""
        if versions.older(self.version, 8, 0):
            return "%s| vmx| I005: %s\n" % (ts, message)
        return "%s In(05) vmx - %s\n" % (ts, message)

    def _log_power_on_failure(self, vmid, path, reason):
        """vmware.log lines of a failed power-on (VMware's messages msg.disk.noBackEnd,
        msg.module.powerOnFailed, msg.vmx.poweron.failed; KB 1004232 quotes the first; the vmx's
        "VMX_PowerOn: ModuleTable_PowerOn = 0" verdict)."""
        from . import vmx
        ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        lines = ['DISKLIB-LINK  : "%s" : failed to open (%s).' % (path, reason),
                 'DISK: Cannot open disk "%s": %s (25).' % (path, reason),
                 "Msg_Post: Error",
                 "[msg.disk.noBackEnd] Cannot open the disk '%s' or one of the snapshot disks it depends on." % path,
                 "[msg.module.powerOnFailed] Module 'Disk' power on failed.",
                 "VMX_PowerOn: ModuleTable_PowerOn = 0",
                 "[msg.vmx.poweron.failed] Failed to start the virtual machine."]
        log = self._vmx_log_path(vmid)
        if log is None:
            return
        with open(log, "a", encoding="utf-8") as f:
            f.writelines(self._vmx_log_line(ts, l) for l in lines)

    def power_off(self, vmid, state="off"):
        from . import writer
        writer.stop(self, vmid, keep_flag=True)
        if self.power_state(vmid) == "suspended":
            self._drop_suspended_state(vmid)  # powering off a suspended VM discards its state
        self.set_power(vmid, state)

    def suspend(self, vmid):
        """power.suspend: the vmx writes the guest's state to `<vmx stem>-<8 hex digits>.vmss` in the VM's
        folder and names it in the .vmx's `checkpoint.vmState` (the digits: guess, no sample names one).
        The file is a checkpoint file (checkpoint.py), as a .vmsn is."""
        from . import vmx
        import random
        from . import checkpoint
        self.power_off(vmid)
        path = self.vmx_real(vmid)
        data = vmx.load(path)
        name = "%s-%08x.vmss" % (os.path.basename(path)[:-4], random.getrandbits(32))
        with open(os.path.join(os.path.dirname(path), name), "wb") as f:
            f.write(checkpoint.render(vmx.render(data)))
        data["checkpoint.vmState"] = name
        vmx.save(path, data)
        self.set_power(vmid, "suspended")

    def _drop_suspended_state(self, vmid):
        """A resume (read) or a power-off (discarded) ends a suspended state: the vmx deletes the .vmss
        and empties `checkpoint.vmState`."""
        from . import vmx
        path = self.vmx_real(vmid)
        data = vmx.load(path)
        state = data.get("checkpoint.vmState", "")
        if state:
            where = self.real(state) if state.startswith("/") else os.path.join(os.path.dirname(path), state)
            if os.path.exists(where):
                os.unlink(where)
            data["checkpoint.vmState"] = ""
            vmx.save(path, data)

    def tools_running(self, vmid):
        v = self.vm(vmid)
        return v["power"] == "on" and v.get("tools", True)

    # ------------------------------------------------------------------ disks
    def vm_disks(self, vmid):
        """[(node, host path of current file, mode)] for every present disk."""
        from . import vmx
        data = self.load_vmx(vmid)
        folder = os.path.dirname(self.vm(vmid)["vmx"])
        out = []
        for node in vmx.disk_nodes(data):
            fn = data[node + ".fileName"]
            p = fn if fn.startswith("/") else os.path.join(folder, fn)
            out.append((node, p, data.get(node + ".mode", "persistent")))
        return out

    def write_locked(self, real_path):
        """The vmid of a running VM that holds real_path open for writing, else None.

        A running vmx opens the current file of each disk (the top of its chain: descriptor and
        extents) read-write with an exclusive lock; the parents of a snapshot chain are opened
        read-only and can be read by others (that is how ghettoVCB clones a running VM's base).
        An independent-nonpersistent disk writes to a redo log, its base is read-only.
        """
        from . import disks
        target = os.path.realpath(real_path)
        for vmid, v in self.vms().items():
            try:
                if v.get("power") != "on" or not self.is_valid(vmid):
                    continue
                nodes = self.vm_disks(vmid)
            except NotFound:
                continue  # unregistered since the inventory was read: its vmx holds no lock now
            for _node, path, mode in nodes:
                if mode == "independent-nonpersistent":
                    continue
                try:
                    files = disks.own_files(self.real(path))
                except (OSError, ValueError):
                    continue
                if target in {os.path.realpath(f) for f in files}:
                    return vmid
        return None

    # VMkernel modules esxisim knows. multiextent (needed to open hosted sparse extents, i.e.
    # 2gbsparse) is not loaded at boot since ESXi 5.1 (William Lam, sample vmdk_04; older
    # hosts open 2gbsparse without it); `esxcli system module load -m multiextent` loads it
    # until the host reboots.
    KNOWN_MODULES = {"multiextent": False, "vmkernel": True}

    def module_loaded(self, name):
        st = self.state()
        default = self.KNOWN_MODULES.get(name, False) or (name == "multiextent" and versions.older(st["version"], 5, 1))
        return bool(st.get("modules", {}).get(name, default))

    def set_module(self, name, loaded=True):
        with self.store.edit() as s:
            s.setdefault("modules", {})[name] = bool(loaded)

    def read_disk(self, vmdk_path):
        """Flattened content of a disk or snapshot chain; accepts host or real paths."""
        from . import disks
        return disks.read_all(self.real(vmdk_path))

    def writer_log(self, name):
        from . import writer
        return writer.read_log(self, name)

    # ------------------------------------------------------------------ faults
    def set_faults(self, **kv):
        with self.store.edit_faults() as f:
            f.update({k.replace("_", ".") if "." not in k else k: str(v) for k, v in kv.items()})

    def set_fault(self, key, value):
        with self.store.edit_faults() as f:
            f[key] = str(value)

    def clear_faults(self):
        self.store.set_faults({})

    def faults(self):
        return self.store.faults()

    # ------------------------------------------------------------------ reboot
    def reboot(self, version=None):
        """What a reboot does to the state a tool may keep: every VM is off (no autostart here),
        the ramdisk is empty again (`/var/run`: ESXi's root file system is visorfs, in memory),
        crond is started anew, the host's boot time (`hostsvc/hostsummary`'s runtime.bootTime) is now
        and its process ids start over (the next vmx gets the pid the host's first vmx got). With `version`, the release installed before it boots (an update,
        upgrade or patch through esxcli takes effect at the reboot after it). The crontab and
        local.sh at boot are tests/test_schedule_esxi.py's."""
        import shutil
        from . import crond, toolgen
        if version is not None:
            versions.info(version)
        for vmid, vm in self.vms().items():
            if vm["power"] != "off":
                self.power_off(vmid)
        was_running = crond.running(self)
        crond.stop_all(self)
        ramdisk = toolgen.upper(self, "run")
        shutil.rmtree(ramdisk)
        os.makedirs(ramdisk)
        with self.store.edit() as s:
            # the host boots now (hostd's runtime.bootTime), its process ids counted anew: the first vmx
            # started after a reboot may get the pid a vmx had before it
            s["boot_time"] = time.time()
            s.pop("last_vmx_pid", None)
            if version is not None:
                s["version"] = version
        if version is not None:
            toolgen.install_python(self)
        if was_running:
            crond.start(self)

    def boot_time(self):
        """When the host last booted (its creation, or `reboot`), seconds since the epoch. A host made before
        esxisim kept it boots "now", once: the time is kept, as hostd's stays put for the whole boot (the
        state folder's ctime, used before, moved at every write of the state)."""
        booted = self.state().get("boot_time")
        if booted:
            return booted
        with self.store.edit() as s:
            s.setdefault("boot_time", time.time())
            return s["boot_time"]

    # ------------------------------------------------------------------ teardown
    def stop(self):
        """Stop every background process of this host (writers, crond)."""
        from . import crond, writer
        for vmid in list(self.vms()):
            writer.stop(self, vmid, keep_flag=True)
        crond.stop_all(self)

    def destroy(self):
        import shutil
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def parse_size(text):
    import re  # see the imports
    if isinstance(text, int):
        return text
    m = re.match(r"^(\d+)([kKmMgGtT]?)[bB]?$", str(text).strip())
    if not m:
        raise ValueError("bad size %r" % text)
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(m.group(1)) * mult


def _keep_old(data):
    """The .vmx's `log.keepOld`: how many old vmware-N.log a power on keeps; 6 where it is not set or not a
    number."""
    try:
        return max(0, int(_vmx_value(data, "log.keepOld", "6")))
    except ValueError:
        return 6


def _vmx_value(data, key, default):
    """The .vmx's value of `key`, in any case (as the vmx reads keys), else `default`."""
    for name, value in data.items():
        if name.lower() == key.lower():
            return value
    return default
