"""A signal that comes while the ESXi driver lists a VM's snapshots, just before it sends the create.

hostd may finish a snapshot whose vim-cmd was stopped, so a run interrupted after sending a create
watches for it for up to a minute before it ends (jobs/backup_end.py). One interrupted before sending
it has nothing to watch for. Seen in a fresh-clone CI run (BACKUP_PARALLEL, where the create lists the
snapshots anew): the signal came during that listing, no create was sent, and the run still watched a
minute for a snapshot no vim-cmd had asked for. The driver now sends no create once a signal is
pending, and says so (Interrupted.unasked), which the job reads as nothing to wait for."""

from esxisim import proclog
from simhost import host_python, needs_root, ours


@needs_root
def test_a_signal_pending_before_the_create_sends_none_and_says_so(host):
    vmid = host.create_vm("web", "datastore1", [{"size": "1M"}], power="on")
    code = ("import os, signal; from hotvcb import interrupt; from hotvcb.errors import Interrupted; "
            "from hotvcb.hosts.esxi import EsxiHost; from hotvcb.localshell import LocalShell; "
            "interrupt.install(); h = EsxiHost(LocalShell()); [ref] = h.list_vms(); vm = h.load_vm(ref); "
            "os.kill(os.getpid(), signal.SIGTERM)\n"
            "try:\n    h.create_snapshot(vm, 'hotvcb-snapshot-x', '', False, False, 60.0)\n"
            "except Interrupted as err:\n    print('unasked' if err.unasked else 'asked')")
    r = host_python(host, "-c", code, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "unasked", r.stdout + r.stderr
    creates = [e for e in proclog.read(host) if e["tool"] == "vim-cmd" and e["args"][0] == "vmsvc/snapshot.create"]
    assert not creates and not ours(host, vmid), creates
