"""Where this machine's UEFI firmware (OVMF) is, for EFI guests.

Distributions put OVMF in different places; the first pair found wins. No
OVMF found is not an error for a definition: libvirt's `<os firmware='efi'>`
lets libvirt pick one at define time on the host that runs the VM.
"""

import os
from typing import Optional, Tuple

# (code, variables template); the 4M builds first (Debian 12 and later, Ubuntu 22.04 and later)
CANDIDATES = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"),
    ("/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"),
)


def ovmf() -> Optional[Tuple[str, str]]:
    for code, variables in CANDIDATES:
        if os.path.exists(code) and os.path.exists(variables):
            return code, variables
    return None
