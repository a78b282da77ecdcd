"""A guest that boots in a second under TCG: a boot sector that prints a login prompt.

SeaBIOS loads the first sector of the boot disk at 0x7c00 and jumps to it,
as it would a real OS's boot loader; the code below writes its message to
COM1 (port 0x3f8) and halts. So "the console showed `login:`" proves what a
smoke boot must: the firmware found the disk on the bus the definition
names, read it, and ran the guest's code. A disk without the boot signature
is a guest that does not boot.

    0000 fa           cli
    0001 31 c0        xor ax, ax
    0003 8e d8        mov ds, ax
    0005 be 16 7c     mov si, 0x7c16        ; the message, after the code
    0008 ba f8 03     mov dx, 0x3f8         ; COM1
    000b ac           lodsb                 ; loop:
    000c 84 c0        test al, al
    000e 74 03        jz done
    0010 ee           out dx, al
    0011 eb f8        jmp loop
    0013 f4           hlt                   ; done:
    0014 eb fd        jmp done
"""

CODE = bytes.fromhex("fa31c08ed8be167cbaf803ac84c07403eeebf8f4ebfd")
PROMPT = b"\r\nhotvcb test guest\r\nhotvcb-guest login: "


def boot_sector(message: bytes = PROMPT) -> bytes:
    sector = CODE + message + b"\0"
    assert len(sector) <= 510
    return sector.ljust(510, b"\0") + b"\x55\xaa"


def write_boot_sector(path: str, bootable: bool = True) -> None:
    """Put the guest into the first sector of an existing raw image (or -flat.vmdk)."""
    with open(path, "r+b") as f:
        f.write(boot_sector() if bootable else bytes(512))


def make_boot_disk(path: str, size: int = 4 << 20, bootable: bool = True) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
    write_boot_sector(path, bootable)
