"""Records that do not read, told apart by kind (docs/repository.md "Records that do not read"): `list --json`
names them, verify does not call a record it could not read damaged, a kept backup whose index is missing is
named with the way out, and a host's last-run record is found again after a reinstall gave it a new system id.

Tiny disks (4 MiB).
"""

import datetime
import json
import os
import subprocess

from repotool import PYTHON, ROOT, age, backup, cli, edit_record, make_disk, new_repo
from simhost import needs_root

from hotvcb.localshell import LocalShell
from hotvcb.store import lastrun


def _repo(tmp_path):
    """`web` and `db` backed up once each, older than GC's grace."""
    repo = new_repo(tmp_path / "repo")
    snaps = {}
    for seed, vm in enumerate(("web", "db")):
        make_disk(tmp_path / (vm + ".raw"), size=4 << 20, seed=seed + 1)
        snaps[vm] = backup(repo, vm, tmp_path / (vm + ".raw"), when=datetime.datetime(2026, 12, 1, 21))
    age(tmp_path / "repo", 3 * 3600)
    return snaps


def test_list_json_names_each_record_that_does_not_read_by_its_kind(tmp_path):
    snaps = _repo(tmp_path)
    edit_record(tmp_path / "repo", snaps["web"], lambda r: r.update(version=2))
    edit_record(tmp_path / "repo", snaps["db"], lambda r: r["disks"][0].update(size=2 << 20))
    r = cli("list", "--repo", tmp_path / "repo", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["backups"] == []
    kinds = {u["record"]: u["kind"] for u in out["unreadable"]}
    assert kinds == {"snapshots/" + snaps["web"].id: "newer", "snapshots/" + snaps["db"].id: "damaged"}, out


@needs_root
def test_verify_does_not_call_a_record_it_cannot_read_damaged(tmp_path):
    snaps = _repo(tmp_path)
    os.chmod(os.path.join(str(tmp_path / "repo"), "snapshots", snaps["db"].id), 0)
    r = subprocess.run(["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                        "--bounding-set=-dac_override,-dac_read_search", PYTHON, "-m", "hotvcb", "verify", "--repo",
                        str(tmp_path / "repo")], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "DAMAGED" not in r.stdout and "NOT CHECKED: cannot read snapshots/%s" % snaps["db"].id in r.stdout, r.stdout
    assert "Permission denied" in r.stdout and "1 record(s) this run could not read not checked" in r.stdout


def test_a_kept_backup_whose_index_is_missing_is_named_with_the_way_out(tmp_path):
    snaps = _repo(tmp_path)
    os.unlink(os.path.join(str(tmp_path / "repo"), "indexes", snaps["db"].id + ".0"))
    r = cli("prune", "--repo", tmp_path / "repo", "--keep-last", "1")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "backup db @ 2026-12-01 21:00:00 (%s)" % snaps["db"].id in r.stderr, r.stderr
    assert "move its record, the file snapshots/%s" % snaps["db"].id in r.stderr, r.stderr


def _write(folder, name, **record):
    with open(os.path.join(folder, name), "w") as f:
        json.dump(dict({"vm": "web", "host": "esxi01", "result": "error", "message": "m"}, **record), f)


def test_a_last_run_under_another_system_id_counts_only_where_it_names_the_vms_uuid(tmp_path):
    folder = tmp_path / "web"
    folder.mkdir()
    shell, old, new = LocalShell(), "a" * 16, "b" * 16
    _write(str(folder), ".hotvcb-last-run.esxi01.%s.json" % old, vm_uuid="U1", time=200)
    _write(str(folder), ".hotvcb-last-run.esxi01.lab.%s.json" % old, vm_uuid="U1", time=300)  # host esxi01.lab's

    def found(uuid):
        return lastrun.last(shell, str(tmp_path), "web", "esxi01", uuid, "new-system-id")
    assert found("U1")["time"] == 200  # the reinstalled host's own VM, recorded under its old system id
    assert found("U2") is None and found("") is None  # another VM of that name, or one no uuid ties to it
    _write(str(folder), ".hotvcb-last-run.esxi01.json", vm_uuid="U1", time=100)  # an older hotvcb's: older
    assert found("U1")["time"] == 200
