"""A backup run's own folder under -w, `hotvcb-<run id>/`: its record (`run.txt`) and a debug log of
every line. Removed when the run ends, on every path, unless WORKDIR_DEBUG=1 keeps it (and the log says
where), as ghettoVCB's work directory was; one the run could not finish making (a full /var: an empty
run.txt) is removed at once. A run killed with SIGKILL cannot remove its own: the next backup and
`cleanup` remove the folders of runs of this machine that are gone (runid.running, as the locks judge
their holders), never a live run's, another machine's (a -w on a share; an ESXi host of the same name told
apart by its host id: RunId.same_machine_and_host) or one WORKDIR_DEBUG kept. Only a
folder its run marked REMOVABLE is swept: one an earlier release kept with WORKDIR_DEBUG=1 has no marker at
all (run.txt and debug.log alone), and the admin asked for it to stay.
"""

import os
import shutil
import stat
from typing import List

from .. import datastorepath, runid
from ..blockdigest import open_regular
from ..errors import UsageError
from ..runid import RunId
from ..runlog import RunLog

PREFIX = "hotvcb-"
RECORD = "run.txt"
KEPT = "WORKDIR_DEBUG"  # in a folder WORKDIR_DEBUG=1 keeps: no later run removes it
REMOVABLE = "REMOVABLE"  # in a folder its run removes when it ends: the next run may sweep it if that run is gone


class WorkDir:
    def __init__(self, base: str, run: RunId, keep: bool, log: RunLog):
        self.path = os.path.join(base, PREFIX + run.run)
        self.keep, self.log = keep, log
        debug_log = os.path.join(self.path, "debug.log")
        made = False
        try:
            datastorepath.refuse_missing(base, "-w %s" % base)
            sweep(base, run, log)
            os.makedirs(self.path)
            made = True
            open(os.path.join(self.path, KEPT if keep else REMOVABLE), "w").close()
            with open(os.path.join(self.path, RECORD), "w", encoding="utf-8") as f:
                f.write(run.text() + "\n")
            log.keep_debug(debug_log)
        except UsageError as err:  # -w on no datastore: not made in /vmfs/volumes, where a share is to be mounted
            log.warning("cannot use work directory %s: %s" % (self.path, err))
            self.path = ""
        except OSError as err:
            if keep:  # the debug log asked for is a log sink lost: the final status names it, exit 9
                log.lose("the debug log %s" % debug_log, err)
            else:
                log.warning("cannot use work directory %s: %s" % (self.path, err.strerror or err))
            if made:  # half made (a full file system): nothing in it anyone could use
                shutil.rmtree(self.path, ignore_errors=True)
            self.path = ""

    def finish(self) -> None:
        if not self.path:
            return
        if self.keep:
            self.log.info("WORKDIR_DEBUG: work directory kept at %s (debug.log holds every line)" % self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)


def sweep(base: str, me: RunId, log: RunLog, dry: bool = False) -> List[str]:
    """Remove (`dry`: only find) the work folders under `base` of this machine's runs that are gone; the
    folders found. Only a real folder of our user marked REMOVABLE with a readable record is judged: anyone
    may have put an entry named so there, and a folder whose record is lost tells no owner."""
    found = []  # type: List[str]
    try:
        entries = os.listdir(base)
    except OSError:
        return found
    for entry in sorted(entries):
        folder = os.path.join(base, entry)
        if entry.startswith(PREFIX) and folder != os.path.join(base, PREFIX + me.run) and _gone(folder, me):
            found.append(folder)
            if not dry:
                shutil.rmtree(folder, ignore_errors=True)
            log.info("%s %s: the work folder of a run that is gone" % ("would remove" if dry else "removed", folder))
    return found


def _gone(folder: str, me: RunId) -> bool:
    try:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or os.path.lexists(os.path.join(folder, KEPT)):
            return False
        if not os.path.lexists(os.path.join(folder, REMOVABLE)):  # an earlier release's, or one WORKDIR_DEBUG kept
            return False
        with open_regular(os.path.join(folder, RECORD), follow=False) as f:
            record = runid.parse(f.read(runid.RECORD_MAX).decode("utf-8", "replace"))
    except OSError:
        return False
    return record is not None and record.same_machine_and_host(me) and runid.running(record, me) is False
