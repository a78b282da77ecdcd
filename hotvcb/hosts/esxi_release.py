"""The host's release as `vmware -v` names it, kept on the host's ramdisk until it reboots.

Every backup and restore needs the release (the log's HOST line, whether vmkfstools gets `-a`,
whether the .vmsd's uids are snapshot ids), and the HOST line waits for it before the run's
first VM is asked about. Asking is a process on the host (a Python start on esxisim), so the
answer is kept in the driver's `run_dir` (`/var/run`, beside the host id and the run lock) and
read from there by the next run. Why that is the host's answer, not an old one:

- `/var/run` lives on ESXi's in-memory root file system (visorfs): it starts empty at every
  boot, which the host id (`runid.host_id`) already relies on.
- A release is installed to the altbootbank and runs from the next boot on (an update,
  upgrade or patch through esxcli or Lifecycle Manager needs the reboot), so what `vmware -v`
  said since this boot it still says. The one exception is a live patch (8.0 U3 on), which
  changes the build number without one: until the reboot the log's HOST line names the build
  before it. What the release decides is a release line's (6.5 for `-a`, 5.5 for the uids),
  and no patch moves a host across one.

Only a line naming a release is kept; an unknown answer is asked again by every run, which
warns about it (hosts/esxi_disks.py). Only root writes `/var/run`. Over SSH file by file
(`Shell.remote`) reading the file is a round trip like asking, and keeping it one more: asked.
"""

from typing import Tuple

from ..errors import HostError
from ..shell import Shell
from . import vimcmd

KEPT_NAME = "hotvcb.release"
_LIMIT = 4096  # a release line is ~40 bytes


def release(shell: Shell, run_dir: str) -> Tuple[str, str]:
    """(`vmware -v`'s line naming the host's ESX(i) release or "", what it printed instead)."""
    path = run_dir.rstrip("/") + "/" + KEPT_NAME
    if not shell.remote:
        try:
            kept = vimcmd.version_line(shell.read_regular(path, _LIMIT))
        except HostError:
            kept = ""  # none yet this boot
        if kept:
            return kept, kept
    out = shell.run(["/bin/vmware", "-v"], timeout=60)
    line = vimcmd.version_line(out.output) if out.returncode == 0 else ""
    said = next((l.strip() for l in out.output.splitlines() if l.strip()), "nothing")
    if line and not shell.remote:
        try:
            shell.write_text(path, line + "\n", sync_folder=False)  # a ramdisk: nothing to make durable
        except HostError:
            pass  # the next run asks again
    return line, said if out.returncode == 0 else "exit %d: %s" % (out.returncode, said)
