"""Testers' notes (session 31), pinned through the public command line: what the room check counts for a
virtual RDM, parallel clones into one repository's datastore, a CD-ROM's ISO in the VM's own folder after a
restore under a new name, and a suspended VM's state file."""

import re

from simhost import hotvcb, needs_root, write_conf


@needs_root
def test_room_for_a_thin_copy_of_a_virtual_rdm_is_the_luns_size_not_the_mapping_files(host, tmp_path):
    """`db` has an 8 MiB virtual-mode RDM. On VMFS its mapping file allocates next to nothing (esxisim's
    fresh stand-in: a hole), whatever the LUN holds, and `vmkfstools -i -d thin` writes the LUN's data, up to
    its whole size. The room check counted the mapping file's allocation (0 bytes), so a backup started
    onto a datastore with far less room than the LUN could need, and ran it full. The need counted is the
    LUN's virtual size, for a folder backup and a repository's temporary clone alike (one estimate)."""
    host.create_vm("db", "datastore1", [{"size": "1M"}, {"size": "8M", "rdm": "virtual"}], power="on")
    for keys in ({}, {"VM_BACKUP_REPOSITORY": "/vmfs/volumes/backup/repo"}):
        conf = write_conf(host, **keys)
        r = hotvcb(host, "backup", "-m", "db", "-g", conf, "-w", tmp_path / "work", "-d", "dryrun")
        assert r.returncode == 0, r.stdout + r.stderr
        [line] = [l for l in (r.stdout + r.stderr).splitlines() if "VMDK:" in l and "db_1.vmdk" in l]
        assert re.search(r"(needs|at most) 8(\.0)? ?MiB", line), line
