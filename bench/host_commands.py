"""What `backup -a`'s overhead per VM is made of, on the simulated host (issue 8).

issue8.py's `backup -a` row measures hotvcb's overhead per VM beyond the
clones. This splits it: the host commands other than the clone that each VM
needs (counted and timed by tests/countshell.py; those asked ahead in a
thread beside a copy, jobs/lookahead.py, are off the critical path and
counted apart), what one simulated
`vim-cmd` costs against a bare start-up of the host's python and of
`/bin/true` (all started from one python inside the host, so no
`esxisim shell` start-up is counted), and what is left: hotvcb's own work.
On esxisim every `vim-cmd` is a Python process (argument parsing, the
simulator's state files); on a real host it is a round trip to hostd, which
costs 0.1-0.5 s there. No target: this is the measurement bench/README.md
points to; exit 0.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
from countshell import asked_ahead  # noqa: E402
from esxisim import Host  # noqa: E402

GIB = 1 << 30
VMS = 10
CALLS = 20
ENV = dict(os.environ, PYTHONPATH=ROOT)

# Runs inside the host: per-call wall time of each command, best of CALLS.
PROBE = r"""
import json, subprocess, sys, time
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    best = None
    for _ in range(%d):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
    out[name] = best
print(json.dumps(out))
""" % CALLS


def on_host(host, *argv):
    r = subprocess.run([sys.executable, "-m", "esxisim", "shell", host.root, "--"] + list(argv),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(r.stdout[-2000:])
    return r.stdout


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="hotvcb-bench-host-commands-")
    host = Host.create(os.path.join(tmp, "esx"), version="7.0.3", crond=False)
    try:
        host.add_datastore("datastore1", 16 * GIB, vmfs=6)
        host.add_datastore("backup", 16 * GIB, vmfs=6)
        for i in range(VMS):
            host.create_vm("vm%02d" % i, "datastore1", [{"size": "8M"}], power="on")
        conf = os.path.join(host.root, "bench.conf")
        with open(conf, "w") as f:
            f.write("VM_BACKUP_VOLUME=/vmfs/volumes/backup/hotvcb\nDISK_BACKUP_FORMAT=thin\n"
                    "VM_BACKUP_ROTATION_COUNT=3\n")
        counts = os.path.join(tmp, "count.json")
        t0 = time.perf_counter()
        on_host(host, "env", "PYTHONPATH=%s:%s/tests" % (ROOT, ROOT), "/bin/python", "-m", "countshell", counts,
                "backup", "-a", "-g", conf, "-w", os.path.join(tmp, "work"))
        total = time.perf_counter() - t0
        with open(counts) as f:
            c = json.load(f)
        kinds = {}  # type: dict
        ahead = (0, 0.0)  # asked beside a copy (jobs/lookahead.py): off the critical path
        for argv, secs, ahead_of in zip(c["commands"], c["seconds"], asked_ahead(c)):
            verb = argv[1] if argv[0].endswith("vim-cmd") and len(argv) > 1 else argv[0].rsplit("/", 1)[-1]
            n, s = kinds.get(verb, (0, 0.0))
            kinds[verb] = (n + 1, s + secs)
            if ahead_of:
                ahead = (ahead[0] + 1, ahead[1] + secs)
        vmid = host.vmid_by_name("vm00")
        probe = json.loads(on_host(host, "/bin/python", "-c", PROBE, json.dumps({
            "vim-cmd vmsvc/power.getstate": ["/bin/vim-cmd", "vmsvc/power.getstate", vmid],
            "vim-cmd vmsvc/snapshot.get": ["/bin/vim-cmd", "vmsvc/snapshot.get", vmid],
            "/bin/python -c pass": ["/bin/python", "-c", "pass"],
            "/bin/true": ["/bin/true"],
        })))
    finally:
        host.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    clone_s = kinds.get("vmkfstools", (0, 0.0))[1]
    other = [(v, n, s) for v, (n, s) in sorted(kinds.items()) if v != "vmkfstools"]
    other_n, other_s = sum(n for _, n, _ in other), sum(s for _, _, s in other)
    print("`backup -a` of %d VMs x 8 MiB: %.2f s in all (the `esxisim shell` start-up included), clones %.2f s"
          % (VMS, total, clone_s))
    print()
    print("| host command | calls | per VM | mean s |")
    print("|---|---|---|---|")
    for verb, n, s in other:
        print("| %s | %d | %.1f | %.3f |" % (verb, n, n / VMS, s / n))
    print("| **all but the clone** | %d | %.1f | %.3f |" % (other_n, other_n / VMS, other_s / max(other_n, 1)))
    print()
    print("| one call, inside the host | s |")
    print("|---|---|")
    for name, s in probe.items():
        print("| `%s` | %.3f |" % (name, s))
    own = (total - clone_s - other_s + ahead[1]) / VMS
    print()
    print("Per VM beyond its clone: %.3f s in %.1f host commands (%.3f s each; a bare python start-up is %.3f s), "
          "of which %.1f (%.3f s) asked beside a copy; %.3f s hotvcb's own (the run's start-up spread over "
          "%d VMs included)" % (other_s / VMS, other_n / VMS, other_s / max(other_n, 1), probe["/bin/python -c pass"],
                                ahead[0] / VMS, ahead[1] / VMS, own, VMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
