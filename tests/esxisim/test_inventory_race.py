"""A VM unregistered while another command has read the inventory but not yet its entries. hostd
answers from one inventory; the simulator's tools are separate processes reading one state file, so
each must use the entries it read, not look each VM up again (a lookup of the gone VM raised
NotFound out of `vmkfstools -i` of an unrelated VM's disk and failed a CI run)."""
from esxisim import vimcmd


def _stale_after_unregister(host, monkeypatch):
    """The inventory as read before "gone" (listed first) was unregistered; "kept" is the VM returned."""
    gone = host.create_vm("gone", "datastore1", [{"size": "1M"}], power="on")
    kept = host.create_vm("kept", "datastore1", [{"size": "1M"}], power="on")
    stale, fresh = [host.vms()], host.vms
    host.unregister(gone)
    monkeypatch.setattr(host, "vms", lambda: stale.pop() if stale else fresh())  # the first read is stale
    return kept


def test_the_write_lock_check_skips_a_vm_gone_since_the_inventory_was_read(host, monkeypatch):
    kept = _stale_after_unregister(host, monkeypatch)
    assert host.write_locked(host.real("/vmfs/volumes/datastore1/kept/kept-flat.vmdk")) == kept


def test_getallvms_answers_from_the_inventory_it_read(host, monkeypatch, capsys):
    _stale_after_unregister(host, monkeypatch)
    assert vimcmd.getallvms(host) == 0
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert names == ["gone", "kept"]  # its .vmx is still there: the answer of the inventory read


def test_a_vm_is_found_by_name_beside_one_gone_since_the_inventory_was_read(host, monkeypatch):
    kept = _stale_after_unregister(host, monkeypatch)
    assert host.vmid_by_name("kept") == kept
