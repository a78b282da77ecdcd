"""vmkfstools: -i clone, -c create, -U delete, -E rename, -e chain check, -q query, -h help.

Texts from samples vmkfstools-*; "guess" marks texts no sample shows. Failures exit 1
(the real exit status was not captured in any sample; ghettoVCB only tests != 0).
A failed clone removes the partial destination (vmkfstools deletes what it created).
"""
import os
import sys
import time

from . import disks, faults, versions

FORMATS = {"zeroedthick": "VMFS zeroedthick", "thin": "VMFS thin-provisioned",
           "eagerzeroedthick": "VMFS eagerzeroedthick",
           "2gbsparse": "sparse with 2GB maximum extent size"}  # 2gbsparse text: guess (not in samples)

ERR_EXISTS = "The file already exists (39)"            # documented code; not seen verbatim
ERR_NOSPACE = "There is not enough space on the file system for the selected operation (13)"
ERR_FAULT = "No such device or address (393225)"
ERR_LOCKED = "Failed to lock the file (16392)"
FULL_CHECK = 0.1  # seconds between two looks at whether the datastore is full (each walks its files)


class Fail(Exception):
    pass


def help_text(host):
    """Read when shown, not when the module loads: a clone or a delete prints no help."""
    with open(os.path.join(os.path.dirname(__file__), "vmkfstools_help.txt"), encoding="utf-8") as f:
        help_65 = f.read()
    if host.version.startswith("6.5"):
        return help_65
    # newer hosts mark --adaptertype deprecated (ghettoVCB greps for it); exact layout is a guess
    return help_65.replace("-a --adaptertype [buslogic|lsilogic|ide\n                                |lsisas|pvscsi]",
                           "-a --adaptertype [deprecated]")


def w(text):
    sys.stdout.write(text)
    sys.stdout.flush()


def err(text):
    sys.stderr.write(text)
    sys.stderr.flush()


def parse(args):
    opts = {"pos": []}
    alias = {"-i": "clone", "--clonevirtualdisk": "clone", "-d": "format", "--diskformat": "format",
             "-a": "adapter", "--adaptertype": "adapter", "-c": "create", "--createvirtualdisk": "create",
             "-E": "rename", "--renamevirtualdisk": "rename", "-v": "verbose", "--verbose": "verbose",
             "-W": "objtype", "--objecttype": "objtype", "--policyFile": "policy", "-X": "extend",
             "--extendvirtualdisk": "extend"}
    flags = {"-U": "delete", "--deletevirtualdisk": "delete", "-e": "chain", "--chainConsistent": "chain",
             "-q": "query", "--queryrdm": "query", "-h": "help", "-H": "help", "--help": "help",
             "-N": "nonative", "--avoidnativeclone": "nonative"}
    it = iter(args)
    for a in it:
        if a in alias:
            opts[alias[a]] = next(it, None)
        elif a in flags:
            opts[flags[a]] = True
        else:
            opts["pos"].append(a)
    return opts


def main(host, args):
    o = parse(args)
    if not args or (o.get("help") and not o["pos"]):
        if not args:
            w("No valid command specified\n\n")
        w(help_text(host))
        return 0 if args else 1
    if "adapter" in o and o.get("adapter") is not None and not versions.older(host.version, 6, 5):
        # 6.5+ ignore -a (hotvcb and ghettoVCB pass it only to older hosts, which need it)
        w("Option --adaptertype is deprecated and hence will be ignored\n")
    try:
        if o.get("clone"):
            return clone(host, o)
        if o.get("create"):
            return create(host, o)
        if o.get("delete"):
            return delete(host, o)
        if o.get("rename"):
            return rename(host, o)
        if o.get("chain"):
            return chain(host, o)
        if o.get("query"):
            return query(host, o)
    except Fail as e:
        err("%s\n" % _era(host, str(e)))
        return 1
    w(help_text(host))
    return 1


def _era(host, text):
    """ESX(i) 4.x wrote "Failed to clone disk : ..." (space before the colon; vmkfstools-i_02, VCL)."""
    if versions.older(host.version, 5, 0):
        return text.replace("Failed to clone disk: ", "Failed to clone disk : ")
    return text


def _abs(p):
    return os.path.normpath(os.path.join(os.getcwd(), p))


def _free_for(host, dst_host):
    name, ds = host.ds_of_path(dst_host)
    return host.ds_free(name) if ds else None


def clone(host, o):
    src_arg = o["clone"]
    if not o["pos"]:
        raise Fail("Failed to clone disk: Invalid argument (1).")
    dst_arg = o["pos"][-1]
    fmt = o.get("format") or "zeroedthick"
    src, dst = host.real(_abs(src_arg)), host.real(_abs(dst_arg))
    src_host, dst_host = host.host_path(src), host.host_path(dst)
    if fmt not in FORMATS:
        # guess: "thick" and other names are refused; wording not captured from a real host
        raise Fail("Failed to clone disk: Invalid disk format '%s' (1)." % fmt)
    if not os.path.exists(src):
        raise Fail("DiskLib_Check() failed for source disk The system cannot find the file specified (25).")
    try:
        size = disks.read_descriptor(src).sectors * 512
    except (ValueError, UnicodeDecodeError):
        raise Fail("Failed to open '%s': The file specified is not a virtual disk (15)." % src_arg)
    if host.write_locked(src):
        # vmkfstools opens the source before it prints anything (verbose trace in sample
        # vmkfstools-i_02); the running VM's exclusive lock refuses it (same sample, ESXi 7.0U1c)
        raise Fail("Failed to open '%s': %s." % (src_arg, ERR_LOCKED))
    gone = _missing_member(host, src)
    if gone is not None:
        # a delta or extent of the chain is gone: disklib cannot open the disk it would flatten.
        # guess: no real host's wording captured; the parent's is the hosted one (vmkfstools-e-q_01 E,
        # with the code -e uses here), a file of the disk itself is "not found" (25)
        why = ("The system cannot find the file specified (25)" if gone == "own"
               else "The parent of this virtual disk could not be opened (23)")
        raise Fail("Failed to open '%s': %s." % (src_arg, why))
    w("Destination disk format: %s\n" % FORMATS[fmt])
    w("Cloning disk '%s'...\n" % src_arg)
    hosted = ("2gbsparse", "monolithicSparse")
    if not host.module_loaded("multiextent") and (
            fmt == "2gbsparse" or any(disks.disk_format(p) in hosted for p in _chain(host, src))):
        # without the multiextent module disklib cannot open hosted sparse extents (sample vmdk_04),
        # a monolithicSparse disk's one extent among them, nor so a snapshot's delta over one: the clone
        # reads the whole chain
        raise Fail("Failed to clone disk: The system cannot find the file specified (25).")
    if os.path.exists(dst):
        raise Fail("Failed to clone disk: %s." % ERR_EXISTS)
    if not os.path.isdir(os.path.dirname(dst)):
        raise Fail("Failed to clone disk: The system cannot find the file specified (25).")
    free = _free_for(host, dst_host)
    if free is not None and fmt in ("zeroedthick", "eagerzeroedthick") and size > free:
        raise Fail("Failed to clone disk: %s." % ERR_NOSPACE)
    match = faults.get(host, "clone.match")
    applies = not match or match in src_arg or match in src_host or match in src
    fail_at = faults.num(host, "clone.fail_at", -1) if applies else -1
    delay = faults.num(host, "clone.delay", 0) if applies else 0
    shown = [-1]
    created = []
    ds_name, ds = host.ds_of_path(dst_host)
    looked = [0.0]  # when the datastore's allocation was last added up (a walk of its files)

    def progress(done, total):
        pct = int(done * 100 // total) if total else 100
        if ds and (time.monotonic() - looked[0] >= FULL_CHECK or done >= total):
            looked[0] = time.monotonic()
            if host.ds_used(ds_name) > ds["capacity"]:
                # the file system is full whoever filled it: this clone, others running at once, any file
                raise Fail("Failed to clone disk: %s." % ERR_NOSPACE)
        while shown[0] < pct:
            shown[0] += 1
            if 0 <= fail_at <= shown[0]:
                raise Fail("Failed to clone disk: %s." % ERR_FAULT)
            if delay:
                time.sleep(delay / 101.0)
            w("\rClone: %d%% done." % shown[0])

    try:
        disks.clone(src, dst, fmt, progress)
        if size == 0:
            progress(1, 1)
        corrupt = faults.num(host, "clone.corrupt_at", -1) if applies else -1
        if corrupt >= 0 and os.path.exists(_outputs(dst)[1]):
            _flip_byte(_outputs(dst)[1], int(corrupt))
    except Fail as e:
        for p in _outputs(dst):
            if os.path.exists(p):
                os.unlink(p)
        w("")
        err(_era(host, str(e)) + "\n")
        return 1
    except BaseException:
        for p in _outputs(dst):
            if os.path.exists(p):
                os.unlink(p)
        raise
    del created
    w("\n")
    return 0


def _chain(host, src):
    """The real path of each descriptor of src's chain, src first; it ends at a descriptor that is gone."""
    path = src
    while path:
        yield path
        if not os.path.exists(path):
            return
        parent = disks.parent_of(path)
        path = host.real(parent) if parent and parent.startswith("/vmfs") else parent


def _missing_member(host, src):
    """None when every file of src's chain is there, else whose file is gone: "own" or "parent"."""
    for k, path in enumerate(_chain(host, src)):
        if not os.path.exists(path) or not all(os.path.exists(f) for f in disks.own_files(path)):
            return "parent" if k else "own"
    return None


def _flip_byte(path, offset):
    """A target that silently corrupts what was written (fault injection, not an ESXi behaviour)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1) or b"\0"
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def _outputs(dst):
    folder, base = os.path.dirname(dst), os.path.basename(dst)
    stem = base[:-5] if base.lower().endswith(".vmdk") else base
    out = [dst, os.path.join(folder, stem + "-flat.vmdk")]
    if os.path.isdir(folder):
        out += [os.path.join(folder, f) for f in os.listdir(folder)
                if f.startswith(stem + "-s") and f[len(stem) + 2:-5].isdigit() and f.endswith(".vmdk")]
    return out


def create(host, o):
    from .host import parse_size
    if not o["pos"]:
        raise Fail("Failed to create virtual disk: Invalid argument (1).")
    dst_arg = o["pos"][-1]
    dst = host.real(_abs(dst_arg))
    fmt = o.get("format") or "zeroedthick"
    if fmt not in ("zeroedthick", "thin", "eagerzeroedthick"):
        raise Fail("Failed to create virtual disk: Invalid disk format '%s' (1)." % fmt)
    size = parse_size(o["create"])
    if os.path.exists(dst):
        raise Fail("Failed to create virtual disk: %s." % ERR_EXISTS)
    free = _free_for(host, host.host_path(dst))
    if free is not None and fmt != "thin" and size > free:
        raise Fail("Failed to create virtual disk: %s." % ERR_NOSPACE)
    if fmt == "eagerzeroedthick":
        w("Creating disk '%s' and zeroing it out...\n" % dst_arg)
    adapter = o.get("adapter") or "lsilogic"
    disks.create_base(dst, size, fmt, adapter if adapter in ("ide", "buslogic", "lsilogic", "lsisas", "pvscsi") else "lsilogic")
    w("Create: 100% done.\n")
    return 0


def delete(host, o):
    p = host.real(_abs(o["pos"][-1])) if o["pos"] else None
    if not p or not os.path.exists(p):
        raise Fail("Failed to delete virtual disk: The system cannot find the file specified (25).")  # guess
    disks.delete(p)
    return 0


def rename(host, o):
    src = host.real(_abs(o["rename"]))
    if not o["pos"]:
        raise Fail("Failed to rename virtual disk: Invalid argument (1).")
    dst = host.real(_abs(o["pos"][-1]))
    if not os.path.exists(src):
        raise Fail("Failed to rename virtual disk: The system cannot find the file specified (25).")  # guess
    if os.path.exists(dst):
        raise Fail("Failed to rename virtual disk: %s." % ERR_EXISTS)
    disks.rename(src, dst)
    return 0


def chain(host, o):
    arg = o["pos"][-1] if o["pos"] else ""
    p = host.real(_abs(arg))
    try:
        child = disks.read_descriptor(p)
        cur = p
        while child.get("parentFileNameHint"):
            par = disks.parent_of(cur)
            pd = disks.read_descriptor(host.real(par) if par.startswith("/vmfs") else par)
            if pd.get("CID") != child.get("parentCID"):
                # KB 1007969 wording
                w("Disk chain is not consistent : The parent virtual disk has been modified since the child was created (18)\n")
                return 1
            cur, child = par, pd
    except (OSError, ValueError):
        w("Disk chain is not consistent : The parent of this virtual disk could not be opened (23)\n")  # guess
        return 1
    w("Disk chain is consistent.\n")
    return 0


def query(host, o):
    arg = o["pos"][-1] if o["pos"] else ""
    p = host.real(_abs(arg))
    if not os.path.exists(p):
        raise Fail("Failed to open '%s' : The system cannot find the file specified (25)." % arg)  # guess
    fmt = disks.disk_format(p)
    if fmt == "rdmp":
        w("Disk %s is a Passthrough Raw Device Mapping\nMaps to: vml.02000000006000c29%s\n"  # guess
          % (arg, disks.read_descriptor(p).get("CID")))
    elif fmt == "rdm":
        w("Disk %s is a Non-passthrough Raw Device Mapping\nMaps to: vml.02000000006000c29%s\n"
          % (arg, disks.read_descriptor(p).get("CID")))
    else:
        w("%s is not an rdm\n" % arg)
    return 0
