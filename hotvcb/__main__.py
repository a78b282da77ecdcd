# `python -m hotvcb` and the pyz both start here: this file must parse and run on any Python
# (ESXi 6.x ships 3.5, older hosts 2.7), so it says what hotvcb needs before importing the rest.
import sys

if sys.version_info < (3, 8):
    sys.stderr.write(
        "hotvcb: error: this Python is %d.%d; hotvcb needs Python 3.8 or newer (ESXi 7.0 and later "
        "ship it as /bin/python). For ESXi 4.1-6.x, run hotvcb from a Linux box in SSH mode: "
        "hotvcb --host root@HOST backup ... (docs/operations.md)\n" % tuple(sys.version_info[:2]))
    sys.exit(1)

from hotvcb import interrupt  # noqa: E402  (after the version check on purpose)

interrupt.early()  # a SIGTERM while the rest is imported ends the run as an interrupted run, not as exit 143
from hotvcb import pyzcopy  # noqa: E402

pyzcopy.hold()  # from a pyz: every later import from the copy read now, which an upgrade in place does not touch
from hotvcb.cli import main  # noqa: E402

sys.exit(main())
