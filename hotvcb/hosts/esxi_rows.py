"""Which rows of `vim-cmd vmsvc/getallvms` may pick the vmid a backup snapshots.

vim-cmd prints a name and an annotation raw, the annotation last on its row, so a line feed in one
starts a line that reads as a whole row of its own: a forged row, "2   a   [datastore1] a/a.vmx ...", naming any
vmid and any .vmx. Trusting one would snapshot one VM and copy another's disks, or have a VM's
name shared with the VM whose vmid it names. What hostd prints holds two facts a forgery cannot
undo: each VM it lists starts exactly one row with its vmid (a VM it skips starts none), and a .vmx
is registered once. So a vmid that starts several rows (one with a row's fields that no reading
takes included; vimcmd.getallvms_candidates drops a line with a listed vmid and no row's fields,
"2 disks attached", as an annotation's), or a row of a VM hostd skips, tells no VM; nor do vmids
whose rows name one .vmx. A vmid starting one row of its own is that row's VM, or no VM hostd has:
a snapshot of it fails and touches nothing. A forgery can thus cost a VM its backup, said by vmid,
never have another VM's disks copied under it. A withheld row still holds its name: a VM of that
name on another .vmx is withheld with it, as two VMs of one name are refused, never settled by which
row a forgery made doubtful.
"""

import posixpath
from typing import Collection, Dict, List, Tuple

from ..model import VmRef


def settle(rows: List[VmRef], unread: Collection[str]) -> Tuple[List[VmRef], Dict[str, str]]:
    """(the rows that tell their VM, vmid -> why for the others), given every readable row confirmed
    by its .vmx and the vmids hostd skips or that start a row no reading fits."""
    readings = {}  # type: Dict[str, List[VmRef]]  # vmid -> its distinct rows (a repeated one tells nothing new)
    for ref in rows:
        same = readings.setdefault(ref.vmid, [])
        if not any(_vmx(r) == _vmx(ref) and r.name == ref.name for r in same):
            same.append(ref)
    doubtful = {vmid: "it starts %d rows of `vim-cmd vmsvc/getallvms` (%s%s), one of them not hostd's but a line of "
                "an annotation or a name, so which VM it is cannot be told"
                % (len(refs) + (vmid in unread), _shown(refs), ", and one that does not read" if vmid in unread else "")
                for vmid, refs in readings.items() if len(refs) > 1 or vmid in unread}
    single = [refs[0] for vmid, refs in readings.items() if vmid not in doubtful]
    by_vmx = {}  # type: Dict[str, List[VmRef]]
    for ref in single:
        by_vmx.setdefault(_vmx(ref), []).append(ref)
    for refs in (refs for refs in by_vmx.values() if len(refs) > 1):
        for ref in refs:  # one .vmx on several rows: all but one not hostd's, which cannot be told
            doubtful[ref.vmid] = ("its .vmx %r is on the rows of vmids %s of `vim-cmd vmsvc/getallvms`, and a .vmx "
                                  "is registered once" % (ref.vmx_path, ", ".join(r.vmid for r in refs)))
    withheld = {}  # type: Dict[str, List[VmRef]]  # name -> rows that tell no VM
    for refs in readings.values():
        for ref in refs:
            if ref.vmid in doubtful:
                withheld.setdefault(ref.name, []).append(ref)
    for ref in single:
        namesakes = [r for r in withheld.get(ref.name, []) if _vmx(r) != _vmx(ref)]
        if namesakes and ref.vmid not in doubtful:
            doubtful[ref.vmid] = ("its name %r is also on the row of vmid %s, which cannot be told from a forged "
                                  "one: two VMs may have that name" % (ref.name, namesakes[0].vmid))
    return [r for r in single if r.vmid not in doubtful], doubtful


def _vmx(ref: VmRef) -> str:
    return posixpath.normpath(ref.vmx_path)


def _shown(refs: List[VmRef]) -> str:
    return ", ".join("%r on %r" % (r.name, r.vmx_path) for r in refs)
