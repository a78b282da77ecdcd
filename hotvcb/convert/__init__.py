"""Carrying a VM's definition between hypervisors.

One neutral description (machine.Machine) sits between the formats, so each
format has one reader and one writer instead of a converter per pair:

    .vmx ------------ vmx_to_domain.machine_from_vmx ---+
    domain.xml ------ domain_xml.machine_from_xml ------+--> Machine --> domain_xml.render (libvirt)
    <name>.json ----- (jobs/machine_of.py) -------------+           --> qemu_argv.qemu_argv (bare QEMU, smoke boot)
                                                                    --> domain_to_vmx.vmx_from_machine (ESXi)

The table of what maps to what, and what is lost, is in docs/restore.md.
Standard library only (xml.etree): this package runs on ESXi too.
"""
