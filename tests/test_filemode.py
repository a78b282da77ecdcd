"""BACKUP_FILES_CHMOD's modes as chmod(1) applies them (hotvcb/filemode.py)."""

import pytest

from hotvcb.filemode import FileMode


@pytest.mark.parametrize("text, current, is_dir, new", [
    ("640", 0o777, False, 0o640),
    ("0600", 0o644, True, 0o600),
    ("go-rwx", 0o644, False, 0o600),  # ghettoVCB users' value: the owner's bits left as they are
    ("go-rwx", 0o755, True, 0o700),
    ("u=rw,go=", 0o755, False, 0o600),
    ("a+X", 0o644, True, 0o755),  # X: x for a folder ...
    ("a+X", 0o644, False, 0o644),  # ... or a file some class already executes
    ("a+X", 0o744, False, 0o755),
    ("g=u", 0o640, False, 0o660),
    ("go=u,u-w", 0o640, False, 0o466),
    ("ug+rw,o-rwx", 0o604, False, 0o660),
    ("+w", 0o444, False, 0o644),  # no class named: as under umask 022, never group or others write
    ("=r", 0o664, False, 0o444),  # '=' clears every bit first, as chmod's: no group write left
    ("=rw", 0o622, False, 0o644),
    ("=", 0o664, False, 0o000),
    ("7", 0o644, False, 0o007),  # octal with any count of digits, as chmod takes it
    ("00640", 0o777, False, 0o640),
    ("000600", 0o644, False, 0o600),
    ("go+w", 0o644, False, 0o666),  # asked for by name: done
    ("u+s", 0o755, False, 0o4755),
    ("o+t", 0o755, True, 0o1755),
    ("o=", 0o4755, False, 0o4750),
])
def test_modes_as_chmod_gives_them(text, current, is_dir, new):
    assert FileMode(text).apply(current, is_dir) == new


@pytest.mark.parametrize("text", ["rw-r--r--", "0800", "10000", "017777", "go-rwq", "u", "u+rw,,", "x+u", "u+ux", "g=uo", "0o640",
                                  "$(reboot)", "go-rwx;"])
def test_what_chmod_would_not_take_is_refused(text):
    with pytest.raises(ValueError, match="octal file mode such as 600 or 0640, a symbolic one"):
        FileMode(text)


def test_only_a_symbolic_mode_needs_the_current_one():
    assert FileMode("640").fixed and not FileMode("go-rwx").fixed
