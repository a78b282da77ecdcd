"""What the commands print of names they did not choose (a VM's display name, a folder under the backup
volume): escaped as the run's log escapes them, never raw control characters for a terminal or a monitor."""

import json
import os

from simhost import VOLUME, hotvcb, make_host, needs_root, write_conf

pytestmark = needs_root

EVIL = "evil \x1b]0;owned\x07\x1b[2J\x9b31m\u2028x"
RAW = ("\x1b", "\x07", "\x9b", "\u2028")


def raw_in(text):
    return [c for c in RAW if c in text]


def test_status_and_list_escape_a_name_in_text_and_keep_it_in_json(tmp_path):
    host = make_host(tmp_path / "host")
    conf = write_conf(host)
    host.create_vm(EVIL, "datastore1", [{"size": "4M"}], power="on")
    os.makedirs(host.real("%s/%s/%s-2026-12-01_10-00-00" % (VOLUME, EVIL, EVIL)))

    r = hotvcb(host, "status", "-g", conf)
    assert r.returncode == 2 and not raw_in(r.stdout + r.stderr), repr(r.stdout + r.stderr)
    assert "backup        evil \\x1b]0;owned\\x07\\x1b[2J\\x9b31m\\u2028x: no good backup" in r.stdout, r.stdout
    r = hotvcb(host, "status", "-g", conf, "--json")
    assert not raw_in(r.stdout), repr(r.stdout)
    assert EVIL in [c["name"] for c in json.loads(r.stdout)["checks"]], r.stdout  # the same value, JSON-escaped

    r = hotvcb(host, "list", "-g", conf)
    assert r.returncode == 0 and not raw_in(r.stdout + r.stderr), repr(r.stdout + r.stderr)
    head, row = r.stdout.splitlines()
    assert row.startswith("evil \\x1b]0;owned") and head.index("TIME") == row.index("2026-12-01"), r.stdout
    r = hotvcb(host, "list", "-g", conf, "--json")
    assert not raw_in(r.stdout) and [b["vm"] for b in json.loads(r.stdout)["backups"]] == [EVIL], repr(r.stdout)
