"""hotvcb: hot backups of running virtual machines, ghettoVCB-compatible.

The core package uses the standard library only and runs on Python 3.8, the
interpreter ESXi 7/8 ship on the host, where nothing can be installed.
"""

__version__ = "0.1.0"
