"""The guest of a running simulated VM: a process that keeps writing into its disks.

Started by writer.start (`python -m esxisim.guest ROOT VMID`) when a VM with a
writer powers on; every write is logged (writer.py) under the VM's lock, so a
test can replay exactly what the disks held at any event. A module of its own:
it needs the Host, and host.py needs writer.py to start it.
"""

import os
import random
import signal
import sys
import time

from . import writer
from .disks import Disk
from .host import Host


def run(root, vmid):
    host = Host(root)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *a: stopping.append(1))
    me = os.getpid()
    v = host.vm(vmid)
    seed = v["seed"]
    rng = random.Random(seed ^ me ^ int(time.time()))
    name = host.display_name(vmid)
    log = host.store.writer_log_path(name)
    seq = writer.last_seq(log)
    writer.append(log, {"event": "writer.start", "pid": me, "t": time.monotonic(), "wall": time.time(), "after_seq": seq})
    while not stopping:
        try:
            v = host.vm(vmid)
        except Exception:
            break
        if v.get("writer_pid") not in (None, me) or v["power"] != "on":
            if v.get("writer_pid") not in (None, me) or v["power"] != "on":
                break
        with host.store.vm_lock(v["vmx"]):
            if stopping:
                break
            targets = [(n, p) for n, p, _m in host.vm_disks(vmid)]
            targets = [(n, p) for n, p in targets if not p.endswith("-rdmp.vmdk")]
            if targets:
                node, path = rng.choice(targets)
                try:
                    with Disk(host.real(path), writable=True) as d:
                        if d.layers[-1].desc.create_type.startswith("vmfsPassthrough"):
                            raise ValueError("rdm")
                        length = rng.choice(writer.SIZES)
                        if d.size >= length:
                            offset = rng.randrange(0, (d.size - length) // 4096 + 1) * 4096
                            seq += 1
                            d.write(offset, writer.payload(seed, seq, length))
                            writer.append(log, {"event": "write", "seq": seq, "t": time.monotonic(), "node": node,
                                          "file": path, "offset": offset, "length": length, "seed": seed})
                except (OSError, ValueError):
                    pass
        time.sleep(1.0 / writer.RATE)
    writer.append(log, {"event": "writer.stop", "pid": me, "t": time.monotonic(), "wall": time.time(), "after_seq": seq})


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
