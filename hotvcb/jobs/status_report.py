"""What `hotvcb status` reports: checks (OK, WARN, CRIT, as Nagios/Icinga/Zabbix read them), the limits they are
judged by, a host's report of them, and an age as a check says it."""

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List

from ..runlog import shown


OK, WARN, CRIT = "OK", "WARN", "CRIT"
RANK = {OK: 0, WARN: 1, CRIT: 2}


@dataclass
class Limits:
    """Where a check turns WARN or CRIT (--max-age and --snapshot-age move the first two)."""

    max_age: float = 26 * 3600  # a nightly job that missed one night is late
    snapshot_age: float = 24 * 3600
    delta_share: float = 0.10  # of the datastore's free space: WARN; five times that: CRIT
    datastore_free: float = 0.10  # of capacity: WARN below, half of it: CRIT


@dataclass
class Check:
    """One finding: a monitor reads its line, a script its JSON."""

    severity: str
    kind: str  # backup | snapshot | consolidation | leftover | datastore | host
    name: str
    message: str
    details: Dict[str, Any] = field(default_factory=dict)

    def line(self, host: str = "") -> str:
        """One line a monitor parses: the name (a VM's or a datastore's, from the host) and the message
        (which quotes the host and the backup volume: paths, a manifest's or a record's text) are each
        one field of it, so a line feed or tab in them cannot forge a line of another severity."""
        return "%-4s %s%-13s %s: %s" % (self.severity, shown(host, field=True) + " " if host else "", self.kind,
                                        shown(self.name, field=True), shown(self.message, field=True))


@dataclass
class Report:
    """All of a host's findings: the worst decides the exit code a monitor acts on."""

    host: str
    checks: List[Check] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return max((c.severity for c in self.checks), key=RANK.__getitem__, default=OK)

    def as_dict(self) -> Dict[str, Any]:
        return {"host": self.host, "status": self.severity, "checks": [asdict(c) for c in self.checks]}


def _age(seconds: float) -> str:
    seconds = int(seconds)
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return "%d%s" % (seconds // n, unit)
    return "%ds" % seconds
