"""Generate the per-host files that the namespace overlays onto the real root.

Tool scripts carry the HOST path and the esxisim source path, so they work from cron,
a login shell or any script without environment variables.
"""
import os
import shlex
import shutil
import stat
import sys

from . import versions
from .enter import LAYERS

PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"


def upper(host, layer):
    return host.store.p("root", layer, "upper")


SHEBANG_MAX = 127  # bytes of a `#!` line every kernel reads, newline included (BINPRM_BUF_SIZE: 256 only from Linux 5.1)


def script(host, tool):
    """The tool as a Python script its interpreter runs straight from the `#!` line: thousands of calls per
    test run, and a /bin/sh in between (busybox ash inside the namespace) cost ~1 ms of a ~14 ms call.
    sys.path[0] (the script's folder, /usr/bin) becomes the esxisim source: nothing is looked up there.
    An interpreter path the kernel cannot take on a `#!` line (blanks, too long) gets a /bin/sh wrapper.
    Public: a test tells the generated tool from one it has wrapped (tests/simhost.py vim)."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys\nsys.path[0] = %r\nsys.argv[1:1] = [%r, %r]\nfrom esxisim.tools import main\nmain()\n" % (
        src, tool, host.root)
    # -S: no site import; the tools need only the standard library and start faster
    shebang = "#!%s -S\n" % sys.executable
    if len(shebang.encode()) <= SHEBANG_MAX and not any(c.isspace() for c in sys.executable):
        return shebang + code
    return "#!/bin/sh\nexec %s -S -c %s \"$@\"\n" % (shlex.quote(sys.executable), shlex.quote(code))


def _put(path, text, mode=0o755):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def real_busybox():
    """A busybox binary to run as the host's /bin/sh: $ESXISIM_BUSYBOX, else the machine's."""
    for cand in (os.environ.get("ESXISIM_BUSYBOX"), "/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox"):
        if cand and os.path.isfile(cand) and not _is_script(cand):
            return cand
    return None


def _is_script(path):
    with open(path, "rb") as f:
        return f.read(2) == b"#!"


def _hide(upper_dir, name):
    """An overlayfs whiteout (a 0/0 character device) hides the lower file of that name."""
    path = os.path.join(upper_dir, name)
    if not os.path.lexists(path):
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(0, 0))


def _install_sh(host, ub):
    """/bin/sh inside the namespace: ESXi's is busybox ash, which has bash's `[[`.

    A real busybox (Debian's builds ash with `[[`) is copied into the host (/usr/lib/esxisim/
    busybox: /usr/bin/busybox is the fake that starts the simulated crond) and run as `sh`;
    without one, bash (as `sh` it is in POSIX mode but keeps `[[`); dash only if neither.
    """
    link = os.path.join(ub, "sh")
    if os.path.lexists(link):
        os.unlink(link)
    bb = real_busybox()
    if bb:
        copy = os.path.join(upper(host, "usr_lib"), "esxisim", "busybox")
        os.makedirs(os.path.dirname(copy), exist_ok=True)
        shutil.copy2(bb, copy)
        os.symlink("/usr/lib/esxisim/busybox", link)
    elif shutil.which("bash"):
        os.symlink(shutil.which("bash"), link)


def install_python(host):
    """/bin/python as the host's release ships it (ESXi 7/8: 3.8), or none."""
    ub = upper(host, "usr_bin")
    link = os.path.join(ub, "python")
    if os.path.lexists(link):
        os.unlink(link)
    if versions.has_python(host.state()["version"]):
        for name in ("python", "python3"):
            hidden = os.path.join(ub, name)
            if os.path.exists(hidden) and stat.S_ISCHR(os.stat(hidden).st_mode):
                os.unlink(hidden)  # a whiteout of an older release's
        os.symlink(PY38 if os.path.exists(PY38) else (shutil.which("python3") or sys.executable), link)
    else:
        for name in ("python", "python3"):
            _hide(ub, name)  # the machine's own python must not show through the overlay


def install(host):
    version = host.state()["version"]
    for layer in LAYERS:
        os.makedirs(upper(host, layer), exist_ok=True)
    ub, us = upper(host, "usr_bin"), upper(host, "usr_sbin")
    for tool in ("vim-cmd", "vmware", "esxcli", "crond"):
        _put(os.path.join(ub, tool), script(host, tool))
    for tool in ("vmkfstools", "esxcli", "auto-backup.sh"):
        _put(os.path.join(us, tool), script(host, tool))
    _put(os.path.join(upper(host, "usr_lib"), "vmware", "busybox", "bin", "busybox"), script(host, "busybox"))
    _put(os.path.join(ub, "busybox"), script(host, "busybox"))  # `busybox crond` is always the fake
    _install_sh(host, ub)
    install_python(host)
    etc = upper(host, "etc")
    _hide(etc, "machine-id")  # systemd's: an ESXi host has none, and its records must carry none of the test machine's
    _put(os.path.join(etc, versions.local_sh_path(version)), versions.local_sh(version), 0o755)
    _put(os.path.join(upper(host, "var_spool"), "cron", "crontabs", "root"), versions.crontab(version), 0o600)
    os.makedirs(os.path.join(etc, "vmware", "hostd"), exist_ok=True)
    _put(os.path.join(etc, "vmware", "esxisim-host"), host.root + "\n", 0o644)
    _put(os.path.join(etc, "vmware", "esx.conf"), '/system/uuid = "%s"\n' % system_uuid(host), 0o644)


def system_uuid(host):
    """The host's system UUID, as ESXi keeps it in /etc/vmware/esx.conf (`/system/uuid`, made at the first
    boot; the value `esxcli system uuid get` prints, vSphere's esxcli reference): an 8-4-4-4-12 hex UUID whose
    last 12 digits are a NIC's MAC, as VMFS uuids carry it. ESXi saves esx.conf with its configuration
    (/sbin/auto-backup.sh, the boot bank's state.tgz) and restores it at boot, so it stays through a reboot
    (Host.reboot empties only /var/run)."""
    import random
    r = random.getrandbits
    return "%08x-%04x-%04x-%04x-%s" % (r(32), r(16), r(16), r(16), host.state()["mac"])
