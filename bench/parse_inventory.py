"""getallvms parsing on a big host: it runs once per backup run."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from hotvcb.hosts.vimcmd import parse_getallvms  # noqa: E402

BASELINE_S = 0.2


def main() -> int:
    rows = ["Vmid   Name   File   Guest OS   Version   Annotation"]
    for i in range(2000):
        rows.append("%d      vm %d [x]   [datastore%d] vm %d/vm %d.vmx   otherGuest64   vmx-19   note" % (i, i, i % 7, i, i))
    text = "\n".join(rows)
    known = {"datastore%d" % i: "/vmfs/volumes/datastore%d" % i for i in range(7)}
    t0 = time.perf_counter()
    refs = parse_getallvms(text, known)
    took = time.perf_counter() - t0
    assert len(refs) == 2000
    print("parse_getallvms, 2000 VMs: %.3f s (baseline <= %.1f s)" % (took, BASELINE_S))
    return 0 if took <= BASELINE_S else 1


if __name__ == "__main__":
    sys.exit(main())
