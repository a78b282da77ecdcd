"""Which SSH hosts the installed schedule jobs back up, read from their text.

Why apart from schedule_cmd.py: `install` warns of a second job reaching the same host (an older hotvcb
named every host's job `hotvcb`) and of hosts a job stops backing up; both read cron lines, systemd units and
ESXi's boot blocks as the shell would, by host name and port, which is one job of its own.
"""

import shlex
from typing import List, Optional, Set, Tuple

from .. import schedule


def installed(sched, on_esxi: bool) -> List[schedule.Entry]:
    """The jobs a scheduler holds (ESXi's status carries them beside crond's and the boot file's state)."""
    status = sched.status()
    return list(status.entries if on_esxi else status)


def jobs_of_host(sched, on_esxi: bool, name: str, destination: str, port: Optional[int] = None) -> List[str]:
    """The other installed jobs that reach the same SSH host: installed under another name (by an older
    hotvcb, whose default name was the same for every host; with --job, or as the host written in
    another case), both would back it up now, colliding on the host's run lock or doubling its snapshots.

    The same host is the same host name, in any case (names are case-blind), at the same port (22 when
    none is given): two hosts behind one gateway told apart by the port are two hosts, and telling the
    admin to remove the other's job would have removed that host's only backup."""
    host = host_key(destination, port)
    return sorted({e.job for e in installed(sched, on_esxi)
                   if e.job != name and host in hosts_in(e.text)})


def host_key(destination: str, port: Optional[int]) -> Tuple[str, int]:
    return destination.rsplit("@", 1)[-1].lower(), port or 22


def hosts_in(text: str) -> Set[Tuple[str, int]]:
    """The SSH hosts (`host_key`) an installed job's text names with `--host` (and `--port`): a cron
    line, a systemd unit's ExecStart=, or ESXi's boot block that holds the cron line quoted once more."""
    found = set()  # type: Set[Tuple[str, int]]
    for line in text.splitlines():
        line = line[len("ExecStart="):] if line.startswith("ExecStart=") else line
        for words in _word_lists(line):
            dest, port = None, None  # type: Optional[str], Optional[int]
            i = 0
            while i < len(words) and words[i] != "backup":  # the global options stand before `backup`
                flag, eq, value = words[i].partition("=")
                if flag in ("--host", "--port") and not eq and i + 1 < len(words):
                    value, i = words[i + 1], i + 1
                if flag == "--host":
                    dest = value
                elif flag == "--port":
                    port = int(value) if value.isdigit() else None
                i += 1
            if dest:
                found.add(host_key(dest, port))
    return found


def _word_lists(line: str) -> List[List[str]]:
    """The line's shell words, and those of each word that is itself a command line (ESXi's boot block)."""
    try:
        words = shlex.split(line)
    except ValueError:
        return []
    out = [words]
    for w in words:
        if " --host" in w:
            out += _word_lists(w)
    return out
