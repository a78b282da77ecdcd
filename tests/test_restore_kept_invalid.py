"""A VM restored into its own folder while hostd still lists it, invalid (its files were lost): hostd
may keep it invalid until `vim-cmd vmsvc/reload` even once the .vmx is back (esxisim finds the files
again by itself). The restore must reload it and report it under its old vmid."""

import os
import shutil

import pytest

from simhost import VOLUME, hotvcb, needs_root, vim, wrap_tool, write_conf

pytestmark = [needs_root, pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")]

# hostd keeps vmid 1 invalid until it is reloaded: its getallvms row is left out, as a skipped VM's
KEPT_INVALID = ('case "$1" in\n'
                '  vmsvc/reload) [ "$2" = 1 ] && : > /vmfs/volumes/backup/vm1-reloaded ;;\n'
                '  vmsvc/getallvms) if [ ! -e /vmfs/volumes/backup/vm1-reloaded ]; then echo "Skipping invalid VM \'1\'"; '
                '"$0.real" "$@" | grep -v "^1 "; exit 0; fi ;;\n'
                'esac')


def test_a_vm_hostd_keeps_invalid_until_reloaded_is_reloaded_and_reported_under_its_vmid(host):
    vm = "Lost Ä"
    host.create_vm(vm, "datastore1", [{"size": "2M"}], power="off")
    r = hotvcb(host, "backup", "-m", vm, "-g", write_conf(host))
    assert r.returncode == 0, r.stdout + r.stderr
    (entry,) = [e for e in os.listdir(host.real(VOLUME + "/" + vm)) if e.startswith(vm + "-")]
    shutil.rmtree(host.real("/vmfs/volumes/datastore1/" + vm))
    wrap_tool(host, "vim-cmd", KEPT_INVALID)
    r = hotvcb(host, "restore", VOLUME + "/" + vm + "/" + entry, "--datastore", "datastore1")
    text = r.stdout + r.stderr
    assert r.returncode == 0 and "Registered %s as vmid 1: the host had kept it" % vm in text, text
    assert "Lost" in vim(host, "vmsvc/getallvms") and host.is_valid("1"), text
