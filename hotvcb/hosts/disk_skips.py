"""Why a KVM driver (libvirt's, bare QEMU's) leaves a drive that holds the guest's data out of the backup, worded
once for both: the job names each in a warning and the run ends WARNING, as for an ESXi physical RDM."""

# a snapshot of one VM's over a disk another VM writes too would hide this VM's writes from the other (a cluster
# disk's locks and heartbeats go stale), while the other's go on into the image under the copy
SHAREABLE = "shareable disk (another VM writes it too, which a snapshot of this VM's would cut off from its writes)"
# the guest's data, but no disk: libvirt's backup job exports none, and a restore would make it a disk
WRITABLE_FLOPPY = "writable floppy image (a backup copies disks only)"
