"""Per-release facts: build numbers, `vmware -l` level text, default crontab and local.sh.

Sources are the samples in esxi-samples (vmware-v_01, crontab-root_01, local-sh_01).
Where no pristine file exists for a release the nearest sample is used (noted below).
"""

VERSIONS = {
    # version: (build, level text for `vmware -l`, esxcli Update, esxcli Patch)
    # Hosts older than 7.0 run no Python hotvcb can use (6.5 and 6.7 ship 3.5, 6.0/5.5 2.x, 4.1 none):
    # esxisim gives them no /bin/python; hotvcb serves them over SSH.
    "4.1.0": ("502767", "4.1.0 Update 2", "2", "0"),
    "5.5.0": ("3248547", "5.5.0 Update 3", "3", "0"),
    "6.0.0": ("3620759", "6.0.0 Update 2", "2", "0"),
    "6.5.0": ("14320405", "6.5.0 Update 3", "3", "0"),
    "6.7.0": ("17499825", "6.7.0 Update 3", "3", "0"),
    "7.0.3": ("24784741", "7.0 Update 3", "3", "150"),
    # 8.0 U2 GA build number from VMware release notes (no sample); level text follows "8.0 Update 1".
    "8.0.2": ("22380479", "8.0 Update 2", "2", "0"),
}

_CRON_65 = """#min hour day mon dow command
1    1    *   *   *   /sbin/tmpwatch.py
1    *    *   *   *   /sbin/auto-backup.sh
0    *    *   *   *   /usr/lib/vmware/vmksummary/log-heartbeat.py
*/5  *    *   *   *   /sbin/hostd-probe ++group=host/vim/vmvisor/hostd-probe
"""  # sample A (ESXi 6.x) without the user line and the unaligned vsanObserver line

_CRON_67 = """#min hour day mon dow command
1    1    *   *   *   /sbin/tmpwatch.py
1    *    *   *   *   /sbin/auto-backup.sh
0    *    *   *   *   /usr/lib/vmware/vmksummary/log-heartbeat.py
*/5  *    *   *   *   /bin/hostd-probe.sh ++group=host/vim/vmvisor/hostd-probe/stats/sh
00   1    *   *   *   localcli storage core device purge
"""  # sample B

_CRON_70 = """#min hour day mon dow command
1    1    *   *   *   /sbin/tmpwatch.py
1    *    *   *   *   /sbin/auto-backup.sh ++group=host/vim/vmvisor/backup.sh
0    *    *   *   *   /usr/lib/vmware/vmksummary/log-heartbeat.py
*/5  *    *   *   *   /bin/hostd-probe.sh ++group=host/vim/vmvisor/hostd-probe/stats/sh
00   1    *   *   *   localcli storage core device purge
*/10 *    *   *   *   /bin/crx-cli gc
"""  # sample C (7.0.x / 8.0.x); no pristine 8.0 file was found, C2 covers 8.0.1


def crontab(version):
    if older(version, 6, 7):  # sample A (ESXi 6.x); no pristine file of 4.1/5.5/6.0 was found
        return _CRON_65
    if version.startswith("6.7"):
        return _CRON_67
    return _CRON_70


_LOCAL_SH_BODY = """
# local configuration options

# Note: modify at your own risk!  If you do/use anything in this
# script that is not part of a stable API (relying on files to be in
# specific places, specific tools, specific output, etc) there is a
# possibility you will end up with a broken system after patching or
# upgrading.  Changes are not supported unless under direction of
# VMware support.

# Note: This script will not be run when UEFI secure boot is enabled.

exit 0
"""


def local_sh_path(version):
    """/etc/rc.local.d/local.sh from ESXi 5.1 on; /etc/rc.local on ESXi 4.x/5.0 (sample local-sh_01)."""
    return "rc.local.d/local.sh" if not older(version, 5, 1) else "rc.local"


def local_sh(version):
    first = "#!/bin/sh" if older(version, 7, 0) else "#!/bin/sh ++group=host/vim/vmvisor/boot"
    return first + "\n" + _LOCAL_SH_BODY


def info(version):
    if version not in VERSIONS:
        raise ValueError("unsupported version %s (have %s)" % (version, ", ".join(sorted(VERSIONS))))
    return VERSIONS[version]


def tuple_of(version):
    parts = version.split(".")
    return int(parts[0]), int(parts[1])


def older(version, major, minor):
    """version < major.minor"""
    return tuple_of(version) < (major, minor)


def has_python(version):
    """A /bin/python hotvcb can run on: ESXi 7/8 ship 3.8. ESXi 6.5 and 6.7 ship 3.5, older ones 2.x or none:
    they get none (no 3.5 to give them here; onhost_boot turns a 3.5 away as it would a missing one)."""
    return not older(version, 7, 0)


def old_faults(version):
    """ESX 4.x / ESXi 5.x print "dynamicType = <unset>," and end every field with "," (sample
    vimcmd-faults_01); 6.x+ print "faultMessage = <unset>" and no comma after the last field."""
    return older(version, 6, 0)
