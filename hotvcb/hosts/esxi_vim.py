"""How the ESXi driver runs vim-cmd: one verb through the shell, its fault told by its output as well as its
exit status (several faults exit 0 with a `(vim.fault.X) { msg = "..." }` block), and the verbs that only
read, which leave the driver's scans of VM folders valid (any other may change them: a snapshot, a
registration)."""

import re
from typing import List

from .. import lazyre
from ..errors import CommandFailed, HostdDown, ToolKilled
from ..shell import Shell
from ..treeview import ScannedShell

VIM_CMD = "/bin/vim-cmd"
_FAULT = lazyre.compile(r"^\((vim|vmodl)\.fault\.(\w+)\)", re.M)
# vim-cmd that could not log in to hostd (Apache VCL's VIM_SSH.pm catches these texts whatever the exit status):
# "Connect to localhost failed: Connection failure", "Failed to login: Connection reset by peer". Only as
# the output's first line: a later one may be a VM's annotation in a listing, anyone's to write
_NO_HOSTD = lazyre.compile(r"\s*((?:Connect to localhost failed|Failed to login)\b[^\r\n]*)")
# vim-cmd verbs that only read: they leave the driver's scans of VM folders valid
_QUERIES = frozenset(["vmsvc/getallvms", "vmsvc/snapshot.get", "vmsvc/power.getstate", "vmsvc/get.guest",
                      "hostsvc/datastore/listsummary", "hostsvc/datastore/info", "hostsvc/hostsummary"])


class Vim:
    """vim-cmd on one host: `shell` runs it, `files` is the driver's scanned view of VM folders, dropped by
    any verb that is not a query."""

    def __init__(self, shell: Shell, files: ScannedShell):
        self.shell, self.files = shell, files

    def __call__(self, args: List[str], timeout: float = 300, interruptible: bool = True) -> str:
        # a query leaves the files as they are; anything else may change them (a snapshot, a
        # registration), so the driver's scans of VM folders are dropped
        runner = self.shell.run if args[0] in _QUERIES else self.files.run
        out = runner([VIM_CMD] + args, timeout=timeout, interruptible=interruptible)
        down = _NO_HOSTD.match(out.output)
        if down:
            raise HostdDown(out.argv, out.returncode, out.output, down.group(1))
        killed = out.killed()
        if killed:  # no answer, though hostd may have done what it asked (started the VM)
            raise ToolKilled(out.argv, out.returncode, out.output, killed)
        fault = _FAULT.search(out.output)
        if out.returncode != 0 or fault:
            raise CommandFailed(out.argv, out.returncode, _fault_message(out.output), fault.group(2) if fault else "")
        return out.output


def _fault_message(output: str) -> str:
    m = re.search(r'msg = "(.*)",?\s*$', output, re.M)
    if not m:
        return output.strip()
    # PlatformConfigFault's msg is generic ("An error occurred during host configuration."):
    # the cause is in its text field
    detail = re.search(r'^\s*text = "(.+)",?\s*$', output, re.M)
    return "%s: %s" % (m.group(1).rstrip("."), detail.group(1)) if detail else m.group(1)
