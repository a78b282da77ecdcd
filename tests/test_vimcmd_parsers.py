"""The vim-cmd parsers against real outputs in tests/data/esxi-samples."""

from hotvcb.hosts import vimcmd


def names(text, datastores=None):
    return [(r.vmid, r.name, r.vmx_path) for r in vimcmd.parse_getallvms(text, datastores)]


def test_getallvms_name_with_space_and_string_sorted_ids(sample):
    rows = names(sample("getallvms_01"))
    assert ("112", "space vm", "/vmfs/volumes/WDS100T2B0A/space vm/space vm.vmx") in rows
    assert ("11", "test.vm", "/vmfs/volumes/WDS100T2B0A/test.vm/test.vm.vmx") in rows
    assert len(rows) == 11


def test_getallvms_skipping_line_and_multiline_annotation(sample):
    assert [r[0] for r in names(sample("getallvms_02"))] == ["1", "11", "2", "3"]
    rows = names(sample("getallvms_11"))
    assert [r[1] for r in rows] == ["xx", "makemake"]  # "autostart" is not a VM


def test_getallvms_datastore_with_space_and_parens(sample):
    rows = names(sample("getallvms_03"))
    assert rows[0] == ("1424", "sap-router", "/vmfs/volumes/datastore1 (4)/sap-router/win2k8x64.vmx")


def test_getallvms_brackets_in_name_need_known_datastores(sample):
    text = sample("getallvms_12")
    rows = names(text, {"datastore_050_vmfs6": "/vmfs/volumes/datastore_050_vmfs6"})
    assert ("24", "Test Test [Test] [Test]", "/vmfs/volumes/datastore_050_vmfs6/Test/Test.vmx") in rows


def test_getallvms_right_aligned_ids(sample):
    assert [r[0] for r in names(sample("getallvms_06"))] == ["42", "43", "45", "51", "52", "9"]


def test_getallvms_name_prefix_is_not_a_match():
    text = (
        "Vmid   Name    File    Guest OS    Version   Annotation\n"
        "1      web     [ds1] web/web.vmx         otherGuest   vmx-19\n"
        "2      web 2   [ds1] web 2/web 2.vmx     otherGuest   vmx-19\n"
    )
    assert [r.name for r in vimcmd.parse_getallvms(text)] == ["web", "web 2"]


def test_getallvms_a_line_separator_in_a_name_stays_in_its_row():
    """A display name holding U+2028 or NEL (which str.splitlines ends a line at) is one row, not a VM
    that vanishes from the listing: the backup then refuses it by name (test_restore_inputs)."""
    text = (
        "Vmid   Name    File    Guest OS    Version   Annotation\n"
        "1      a\u2028b     [ds1] a/a.vmx         otherGuest   vmx-19\n"
        "2      c\x85d     [ds1] c/c.vmx         otherGuest   vmx-19\r\n"
    )
    assert [(r.vmid, r.name) for r in vimcmd.parse_getallvms(text)] == [("1", "a\u2028b"), ("2", "c\x85d")]


def test_getallvms_a_line_feed_in_a_name_joins_its_row_again():
    """vim-cmd prints a name raw: a line feed in it splits the row in two. The row is joined again (the
    name keeps its line feed; the backup refuses it by name), with no unreadable row left over; an
    annotation's next line is still no VM."""
    text = (
        "Vmid   Name    File    Guest OS    Version   Annotation\n"
        "1      lf\nvm   [ds1] a/a.vmx         otherGuest   vmx-19\n"
        "2      \nfirst   [ds1] b/b.vmx         otherGuest   vmx-19   two\n"
        "lines\n"
        "3      c     [ds1] c/c.vmx         otherGuest   vmx-19\n"
    )
    listing = vimcmd.getallvms_candidates(text)
    assert [(c[0].vmid, c[0].name, c[0].vmx_path) for c in listing.rows] == [
        ("1", "lf\nvm", "/vmfs/volumes/ds1/a/a.vmx"), ("2", "first", "/vmfs/volumes/ds1/b/b.vmx"),
        ("3", "c", "/vmfs/volumes/ds1/c/c.vmx")]
    assert listing.unreadable == {}


def test_getallvms_a_row_no_reading_fits_is_named_not_dropped(sample):
    """A row that starts with a vmid but never reads, however many of the next lines are joined to it,
    is the VM's: reported by vmid with its text, so `backup -a` names it as not backed up."""
    text = (
        "Vmid   Name    File    Guest OS    Version   Annotation\n"
        "7      half\n"
        "8      ok   [ds1] ok/ok.vmx         otherGuest   vmx-19\n"
        "9      broken [ds1] no-vmx-field\n"
    )
    listing = vimcmd.getallvms_candidates(text)
    assert [c[0].name for c in listing.rows] == ["ok"]
    assert sorted(listing.unreadable) == ["7", "9"]
    assert "'7      half'" in listing.unreadable["7"], listing.unreadable
    for name in ("getallvms_01", "getallvms_02", "getallvms_03", "getallvms_11"):  # real listings: none
        assert vimcmd.getallvms_candidates(sample(name)).unreadable == {}, name
    # sample 12 E: a listing its author shortened (no `[datastore] dir/`): those VMs cannot be found
    assert sorted(vimcmd.getallvms_candidates(sample("getallvms_12")).unreadable) == ["10", "11"]


def test_snapshot_get_nesting_and_ids(sample):
    snaps = vimcmd.parse_snapshot_get(sample("snapshot-get_03"))
    assert [(s.id, s.name, s.depth) for s in snaps[:4]] == [
        ("1", "snap01", 0), ("2", "snap02", 1), ("3", "snap03", 2), ("4", "snap04", 3)
    ]
    assert snaps[0].description == "snap01 description"


def test_snapshot_get_empty_multiline_and_legacy(sample):
    assert vimcmd.parse_snapshot_get(sample("snapshot-get_00")) == []
    multi = vimcmd.parse_snapshot_get(sample("snapshot-get_05"))
    assert multi[0].description == "clush configured\ntmp and all traces of mapr removed"
    legacy = vimcmd.parse_snapshot_get(sample("snapshot-get_06"))
    assert legacy[0].id == "" and legacy[0].name == "1311966951"


def test_power_state(sample):
    assert vimcmd.parse_power_state("Retrieved runtime info\nPowered on\n") == "on"
    assert vimcmd.parse_power_state("Retrieved runtime info\nSuspended") == "suspended"
    assert vimcmd.parse_power_state("Retrieved runtime info\nPowered off\n") == "off"


def test_tools_running(sample):
    """get.guest's toolsRunningStatus, which a dry run asks where the real run needs VMware Tools."""
    assert vimcmd.parse_tools_running(sample("get-guest_01")) is True
    assert vimcmd.parse_tools_running('   toolsRunningStatus = "guestToolsNotRunning", \n') is False
    assert vimcmd.parse_tools_running("Guest information:\n") is None


def test_datastore_listsummary(sample):
    ds = vimcmd.parse_datastore_listsummary(sample("datastore-listsummary_01"))
    assert [(d.name, d.free, d.type) for d in ds] == [
        ("local-datastore", 26277314560, "VMFS"), ("nfs-datastore", 108854874112, "NFS")
    ]


def test_clone_percent_from_redrawn_progress():
    assert vimcmd.clone_percent("Clone: 10% done.") == 10
    assert vimcmd.clone_percent("Clone: 100% done.Failed to clone disk: x (13).") == 100
    assert vimcmd.clone_percent("Destination disk format: VMFS thin-provisioned") is None


NAS_INFO = """(vim.host.NasDatastoreInfo) {
   name = "nfs_backup",
   url = "/vmfs/volumes/6c3a1f0e-2b9d4e11",
   freeSpace = 4294967296,
   nas = (vim.host.NasVolume) {
      type = "NFS41",
      name = "nfs_backup",
      capacity = 8589934592,
      remoteHost = "10.0.0.5",
      remotePath = "/export/backups",
      userName = <unset>,
      remoteHostNames = (string) [
         "10.0.0.5",
         "10.0.0.6"
      ],
      securityType = <unset>,
      protocolEndpoint = <unset>
   }
}
"""


def test_the_share_an_nfs_datastore_mounts_is_read_from_its_info():
    """`datastore/info`'s NasVolume (vSphere API field names; no verbatim sample exists): remoteHost with NFS
    4.1's remoteHostNames, and remotePath; a VMFS datastore's info names no share."""
    share = vimcmd.parse_nas_share(NAS_INFO)
    assert share is not None and share.servers == ("10.0.0.5", "10.0.0.6") and share.path == "/export/backups"
    assert vimcmd.parse_nas_share(NAS_INFO.replace('"/export/backups"', '""')) is None
    vmfs = '(vim.host.VmfsDatastoreInfo) {\n   name = "datastore1",\n   vmfs = (vim.host.VmfsVolume) {\n      type = "VMFS"\n   }\n}\n'
    assert vimcmd.parse_nas_share(vmfs) is None


def test_getallvms_template_row_is_read_and_marked():
    """hostd lists a template like a VM, its File a `<name>.vmtx` (not one of the samples: VMware's VM
    administration names the template's configuration file so); a `.vmtxx` or `.vmt` is no such file."""
    text = ("Vmid   Name          File                    Guest OS         Version   Annotation\n"
            "1      web           [ds1] web/web.vmx       otherGuest64     vmx-19\n"
            "2      tpl           [ds1] tpl/tpl.vmtx      otherGuest64     vmx-19\n")
    refs = vimcmd.parse_getallvms(text, {"ds1": "/vmfs/volumes/ds1"})
    assert [(r.name, r.vmx_path, r.template) for r in refs] == [
        ("web", "/vmfs/volumes/ds1/web/web.vmx", False), ("tpl", "/vmfs/volumes/ds1/tpl/tpl.vmtx", True)]
    bad = text.replace("tpl.vmtx ", "tpl.vmt  ")
    assert vimcmd.getallvms_candidates(bad).unreadable.keys() == {"2"}


def test_clone_failure_names_its_exit_status_not_a_progress_line():
    """ESXi 8.0b stopped a clone at 18 % with no reason and exit 1 (ghettoVCB issue 285)."""
    from hotvcb.hosts.esxi_disks import _clone_error
    silent = ("Destination disk format: VMFS thin-provisioned\nCloning disk '/vmfs/volumes/ds1/web/web.vmdk'...\n"
              "Clone: 17% done.\rClone: 18% done.\r\n")
    assert _clone_error(silent, 1) == "vmkfstools exited with status 1 at 18% without saying why"
    assert _clone_error("", 255) == "vmkfstools exited with status 255 without saying why"
    assert _clone_error(silent + "Failed to clone disk: No space left on device (393228).\n", 1) == \
        "Failed to clone disk: No space left on device (393228)."
    assert _clone_error(silent + "DiskLib_Check() failed\n", 1) == \
        "vmkfstools exited with status 1: DiskLib_Check() failed"
