"""A list line that names no VM as written and two VMs as its blanks are dropped (`db<NBSP><space>` on a host with
`db` and `db<NBSP>`): the fewest blanks dropped win, and the line is called ambiguous: a warning in -e, a failed
entry in -f (a VM backed up by a guess is not said otherwise)."""

from hotvcb import namelist
from simhost import hotvcb, needs_root, write_conf
from test_outsider_s35r2clean import _list, _vm_named

LINE = "db\u00a0 "


def test_the_fewest_blanks_dropped_win_and_the_line_is_unclear():
    present = ["db", "db\u00a0"]
    line = namelist.Listed("db", LINE)
    assert namelist.fitted([line], present) == ["db\u00a0"]
    assert namelist.unclear([line], present) == [(line, ["db\u00a0", "db"])]
    assert namelist.unclear([namelist.Listed("db", "db\u00a0")], present) == []  # its very name: no doubt
    assert namelist.unclear([namelist.Listed("db", LINE)], ["db"]) == []
    assert namelist.fitted(["db "], present) == ["db "]  # -m: taken literally


@needs_root
def test_an_unclear_f_line_fails_that_entry_and_backs_up_the_others(host):
    for name in ("db", "db\u00a0", "web"):
        _vm_named(host, name)
    r = hotvcb(host, "backup", "-g", write_conf(host), "-d", "dryrun", "-f", _list(host, LINE + "\nweb\n"))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "could mean any of the VMs" in out, out
    assert "Initiate backup for web\n" in out and "Initiate backup for db" not in out, out
