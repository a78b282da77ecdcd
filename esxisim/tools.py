"""Entry point of the generated tool scripts: `<tool> <HOST> args...`."""
import sys
import time


def main():
    tool, root, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    from .host import Host
    rc = run_logged(Host(root), tool, args)
    sys.stdout.flush()
    sys.exit(rc)


def run_logged(host, tool, args):
    """One call of `tool`, in the process log (proclog.py) as the host's commands are; also the test
    suite's in-process call of a host command it only looks through (tests/simhost.py vim)."""
    if tool not in LOGGED:
        return run_tool(host, tool, args)
    from . import proclog
    proclog.record(host, "start", tool, args)
    rc = -1  # raised instead of returning: no exit status of its own
    try:
        rc = run_tool(host, tool, args)
    finally:
        sys.stdout.flush()
        proclog.record(host, "end", tool, args, rc=rc)
    return rc


LOGGED = ("vim-cmd", "vmkfstools", "esxcli", "vmware")  # the host commands (proclog.py); crond lives on


def run_tool(host, tool, args):
    if tool == "vim-cmd":
        from . import vimcmd
        rc = vimcmd.main(host, args)
    elif tool == "vmkfstools":
        from . import vmkfstools
        rc = vmkfstools.main(host, args)
    elif tool == "esxcli":
        from . import esxcli
        rc = esxcli.main(host, args)
    elif tool == "vmware":
        from . import esxcli
        rc = esxcli.vmware_main(host, args)
    elif tool in ("crond", "busybox"):
        rc = busybox(host, tool, args)
    elif tool == "auto-backup.sh":
        rc = auto_backup(host)
    else:
        sys.stderr.write("esxisim: unknown tool %s\n" % tool)
        rc = 127
    return rc


def busybox(host, tool, args):
    """`crond` and `busybox crond` start the fake crond; other applets go to the real ones."""
    import os
    if tool == "busybox":
        if not args:
            print("BusyBox v1.29.3 (ESXi) multi-call binary.")
            return 0
        if args[0] != "crond":
            import shutil
            real = shutil.which(args[0])
            if not real:
                sys.stderr.write("%s: applet not found\n" % args[0])
                return 127
            os.execv(real, args)
        args = args[1:]
    from . import crond
    crond.start(host)
    return 0


def auto_backup(host):
    """Persist /etc state "to the bootbank": copies local.sh aside and logs the call."""
    import os
    import shutil
    bootbank = host.store.p("state", "bootbank")
    os.makedirs(bootbank, exist_ok=True)
    src = host.store.p("root", "etc", "upper", "rc.local.d", "local.sh")
    if os.path.exists(src):
        shutil.copy2(src, os.path.join(bootbank, "local.sh"))
    with open(host.store.p("state", "auto-backup.log"), "a", encoding="utf-8") as f:
        f.write("%f\n" % time.time())
    t = time.gmtime()
    print("Saving current state in /bootbank")
    print("Clock updated.")
    print("Time: %s   Date: %s   UTC" % (time.strftime("%H:%M:%S", t), time.strftime("%m/%d/%Y", t)))
    return 0
