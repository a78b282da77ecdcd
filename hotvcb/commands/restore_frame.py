"""A restore's log frame, as every restore writes it (to a datastore, `--to DIR`, `--kvm DIR`): LOG START, the
run's lines, its final status, LOG END. A log reader takes a run without its END banner for one that died
(docs/migrating-from-ghettovcb.md: "Every line of a run is between its banners")."""

from typing import Union

from ..errors import HotvcbError, Interrupted
from ..runlog import RunLog

LOG_START = "============================== hotvcb restore LOG START =============================="
LOG_END = "============================== hotvcb restore LOG END ================================"


def refused(log: RunLog, err: Union[HotvcbError, Interrupted]) -> None:
    """A run stopped by an error the CLI says on stderr (a usage error; `--to`'s every error): said in the log
    files only (once on the terminal is enough), the log ended with its final status and LOG END."""
    log.file_only()
    log.error(str(err))
    end(log, "ERROR: %s" % err, err.exit_code)


def end(log: RunLog, status: str, code: int) -> int:
    """A restore's log ended as a log watcher reads it: its final status, then LOG END; the code the run exits."""
    status, code = log.account(status, code)
    log.info("###### Final status: %s ######" % status)
    log.info(LOG_END)
    log.close()
    return code
