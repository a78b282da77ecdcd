"""esxisim: a simulated ESXi host (vim-cmd, vmkfstools, esxcli, vmware) for tests and demos."""


def __getattr__(name):
    """`from esxisim import Host` without loading the host model for every command run on the host
    (enter.py, the tools): importing this package no longer imports host.py."""
    if name in ("Host", "NotFound"):
        from . import host
        return getattr(host, name)
    raise AttributeError("module 'esxisim' has no attribute %r" % name)
