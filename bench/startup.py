"""Start-up imports: the CPU a command's import chain costs on the ESXi host's python (3.8).

Every `python -m hotvcb COMMAND` pays for the CLI and its command's module before it does anything: a
cron run on a host, each of the suite's thousands of runs inside esxisim. For each command: the median,
over `-n` runs (20), of the CPU-seconds (user + system, `wait4`) of a fresh interpreter importing what
`__main__` imports for it (`interrupt`, `pyzcopy`, `cli`, `commands/<name>_cmd.py`), less the median of a
bare start (`-c pass`), bytecode compiled first as an installed hotvcb has it.
`--against DIR`: the same for another tree (a checkout's root), the two runs alternating so a busy
machine slows both alike, and the change per command. No target (a measurement): which modules a start-up
leaves out is what `tests/test_startup_imports.py` holds.
"""

import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from _timing import compiled  # noqa: E402

sys.path.insert(0, ROOT)
from esxisim.toolgen import PY38  # noqa: E402
from hotvcb.cli import COMMANDS  # noqa: E402

PYTHON = PY38 if os.path.exists(PY38) else sys.executable


def cpu(tree: str, code: str) -> float:
    """CPU-seconds of one interpreter running `code` with `tree`'s hotvcb."""
    env = dict(os.environ, PYTHONPATH=tree, PYTHONDONTWRITEBYTECODE="1")
    child = subprocess.Popen([PYTHON, "-c", code], cwd=tree, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit("%s failed in %s (status %d)" % (code, tree, status))
    return usage.ru_utime + usage.ru_stime


def measure(trees, runs: int):
    """{(command or "", tree): median ms over a bare start}; "" is the CLI alone, trees alternating."""
    chains = [("", "hotvcb.cli")] + [(c, "hotvcb.cli, hotvcb.commands.%s_cmd" % c) for c in COMMANDS]
    samples = {}  # type: dict
    for name, mods in [(None, None)] + chains:
        code = "pass" if mods is None else "import hotvcb.interrupt, hotvcb.pyzcopy, " + mods
        for _ in range(runs):
            for tree in trees:
                samples.setdefault((name, tree), []).append(cpu(tree, code))
    bare = {tree: statistics.median(samples[(None, tree)]) for tree in trees}
    return {(name, tree): (statistics.median(samples[(name, tree)]) - bare[tree]) * 1e3
            for name, _ in chains for tree in trees}, bare


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="runs per command and tree (median)")
    ap.add_argument("--against", metavar="DIR", help="another tree's root to compare with (its hotvcb/)")
    args = ap.parse_args()
    trees = ([os.path.abspath(args.against)] if args.against else []) + [ROOT]
    for tree in trees:
        compiled(tree)
    ms, bare = measure(trees, args.n)
    print("load %.1f; %s; %d runs each; a bare start %s ms CPU" % (
        os.getloadavg()[0], PYTHON, args.n, " / ".join("%.1f" % (bare[t] * 1e3) for t in trees)))
    print()
    head = ["command's start-up (ms CPU over a bare start)"] + (["against", "this tree", "change"] if args.against
                                                              else ["this tree"])
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in [""] + list(COMMANDS):
        row = [name or "CLI alone (`--version`)"] + ["%.1f" % ms[(name, t)] for t in trees]
        if args.against:
            row.append("%+.0f %%" % ((ms[(name, ROOT)] / ms[(name, trees[0])] - 1) * 100))
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
