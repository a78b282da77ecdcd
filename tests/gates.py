"""One host call held at its boundary (the gate), for tests that act on a simulated ESXi host while hotvcb waits
on a call: stop hotvcb there (stop_at), or do something and let the call go (held). Written for the crash-point
matrix (test_outsider_s34crash.py); the power and SSH testers' files use the same gate."""

import os
import shlex
import signal

from simhost import hotvcb_background, wait_for


def gate(host, tmp_path, tool, pattern, phase):
    """Wrap the host's `tool` so that its first call whose arguments match the sh `case` pattern stops:
    `before` the real tool runs, or `after` it ran (its answer held back). The held call writes
    GATE/hit and waits for GATE/go (60 s at most); GATE/done once the whole call is over. Returns GATE."""
    layer = "usr_sbin" if tool == "vmkfstools" else "usr_bin"
    g = tmp_path / ("gate-" + tool)
    g.mkdir()
    q = shlex.quote(str(g))
    wait = 'i=0; while [ ! -e %s/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done' % q
    if phase == "before":
        held = 'echo $$ > %s/hit; %s; "$0.real" "$@"; rc=$?; touch %s/done; exit $rc' % (q, wait, q)
    else:
        held = '"$0.real" "$@"; rc=$?; echo $$ > %s/hit; %s; touch %s/done; exit $rc' % (q, wait, q)
    path = host.store.p("root", layer, "upper", tool)
    os.rename(path, path + ".real")
    with open(path, "w") as f:
        f.write('#!/bin/sh\ncase "$*" in\n  %s)\n    if mkdir %s/taken 2>/dev/null; then %s; fi;;\nesac\n'
                'exec "$0.real" "$@"\n' % (pattern, q, held))
    os.chmod(path, 0o755)
    return g


def ungate(host, tool):
    layer = "usr_sbin" if tool == "vmkfstools" else "usr_bin"
    path = host.store.p("root", layer, "upper", tool)
    if os.path.exists(path + ".real"):
        os.rename(path + ".real", path)


def stop_at(host, g, run, sig):
    """Once the gated call is held: `sig` to hotvcb, the call let go, hotvcb's end awaited. Returns its output."""
    try:
        wait_held(g, run)
        run.send_signal(sig)
        if sig == signal.SIGKILL:
            run.wait(timeout=30)
        else:  # hotvcb's own stop may end the held call; give it a moment before the call goes on
            try:
                run.wait(timeout=3)
            except Exception:
                pass
        (g / "go").touch()
        out, _ = run.communicate(timeout=90)
    finally:
        (g / "go").touch()
        if run.poll() is None:
            run.kill()
            run.communicate()
    # a held call hotvcb did not end runs to its end (as hostd finishes a task sent to it)
    hit = (g / "hit").read_text().strip() if (g / "hit").exists() else ""
    if hit:
        wait_for(lambda: (g / "done").exists() or not os.path.exists("/proc/" + hit), timeout=30,
                 what="the held call to end")
    return out


def wait_held(g, run, what="the gated call"):
    """Wait until the call gated at `g` is held; hotvcb's `run` must still be going then (its output otherwise)."""
    wait_for(lambda: (g / "hit").exists() or run.poll() is not None, timeout=60, what=what)
    assert run.poll() is None, "the run ended before %s:\n%s" % (what, run.communicate()[0])


def held(host, where, tool, pattern, phase, start, action, timeout=180):
    """hotvcb started by `start()` (a Popen, output piped) with `tool`'s first call matching `pattern` held
    (gate in `where`, `phase`); once it is held, `action()`; then the call let go and the run awaited
    (`timeout` s). The gate is taken off on every path. (rc, output)"""
    g = gate(host, where, tool, pattern, phase)
    try:
        run = start()
        wait_held(g, run)
        action()
        (g / "go").touch()
        out, _ = run.communicate(timeout=timeout)
    finally:
        (g / "go").touch()
        ungate(host, tool)
    return run.returncode, out


def killed_before(host, where, tool, pattern, args):
    """hotvcb `args` run in the background on `host` and SIGKILLed once its first `tool` call matching `pattern` is
    held before it reaches the host (the gate in `where`), and the held call with it (a vim-cmd killed with its
    caller never reaches the host); the gate taken off on every path. The run's output."""
    g = gate(host, where, tool, pattern, "before")
    try:
        run = hotvcb_background(host, *args)
        wait_held(g, run)
        run.kill()
        out, _ = run.communicate(timeout=30)
        os.kill(int((g / "hit").read_text().strip()), signal.SIGKILL)
        return out
    finally:
        (g / "go").touch()
        ungate(host, tool)


def stopped(host, where, tool, pattern, phase, args, sig=signal.SIGKILL):
    """hotvcb `args` run in the background on `host` and stopped by `sig` once its first `tool` call matching
    `pattern` is held (`phase`, the gate in `where`: stop_at); the gate taken off on every path. (rc, output)"""
    g = gate(host, where, tool, pattern, phase)
    try:
        run = hotvcb_background(host, *args)
        out = stop_at(host, g, run, sig)
    finally:
        ungate(host, tool)
    return run.returncode, out
