"""esxisim: a simulated ESXi host (vim-cmd, vmkfstools, esxcli, vmware) for tests and demos."""
from .host import Host, NotFound  # noqa: F401
