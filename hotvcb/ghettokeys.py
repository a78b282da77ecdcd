"""ghettoVCB's own config keys that hotvcb does not take, and why.

ghettoVCB.sh defines these and `source`s the config over them, so an admin's ghettoVCB.conf may set
any of them. To hotvcb they are no typo: a "did you mean" of a look-alike key of hotvcb's would steer
the admin to a key that does something else (NFS_BACKUP_DELAY=0 renamed to NFS_VM_BACKUP_DIR=0 puts
every backup in a folder "0"). config.py names them as ghettoVCB's, with what stands in their place.
The list is ghettoVCB.sh's (2019_01_06 version 4): its user-definable parameters and the ones below
"DO NOT MODIFY PAST THIS LINE" a config may still set, ADAPTER_FORMAT, a user key of its ESX 3.5
days, and TIMEZONE, the first line of the ghettoVCB.conf that 2019_02_07 and later ship; the keys
hotvcb takes are in confkeys.KEYS.
"""

_SLOW_NAS = ("ghettoVCB's slow-NAS workaround (retries and pauses around its writes and removals, a pause "
             "between VMs); hotvcb waits for each host command itself, and a backup folder whose removal the "
             "NAS refused is removed by the next run or `hotvcb cleanup`")

IGNORED = {
    "VM_BACKUP_DIR_NAMING_CONVENTION": "hotvcb always names a backup <VM>-<YYYY-MM-DD_HH-MM-SS> (ghettoVCB's "
                                       "default), which its rotation, list and restore read; one folder a day or "
                                       "an index (0) is not made",
    "ADDITIONAL_ROTATION_PATH": "ghettoVCB never used it either (its code is commented out as untested)",
    "ENABLE_NFS_IO_HACK": _SLOW_NAS,
    "NFS_IO_HACK_LOOP_MAX": _SLOW_NAS,
    "NFS_IO_HACK_SLEEP_TIMER": _SLOW_NAS,
    "NFS_BACKUP_DELAY": _SLOW_NAS,
    "ADAPTER_FORMAT": "ESX 3.5's adapter type (deprecated in ghettoVCB): hotvcb reads each disk's own from its "
                      "descriptor",
    "TIMEZONE": "hotvcb names a backup by the host's own clock as its `date` shows it (ESXi keeps UTC), as "
                "ghettoVCB did with TIMEZONE unset, and stamps its log and mail by the clock of the machine it runs "
                "on; no zone is applied, since backup names in two zones would sort and rotate out of order",
    "LAST_MODIFIED_DATE": "ghettoVCB.sh's own version stamp, not a setting",
    "VERSION": "ghettoVCB.sh's own version stamp, not a setting",
    "VERSION_STRING": "ghettoVCB.sh's own version stamp, not a setting",
}


def ignored(where: str, key: str) -> str:
    """The warning for ghettoVCB's `key` at `where` (file:line), or "" when it is no key of ghettoVCB's."""
    why = IGNORED.get(key)
    return "%s: %s is a ghettoVCB key hotvcb does not use, ignored: %s" % (where, key, why) if why else ""
