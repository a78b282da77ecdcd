"""namefit.fit: the names hotvcb makes after a VM or a file keep within 255 bytes (docs/backup-format.md: a VM
name of up to 226 UTF-8 bytes is backed up, its markers and temp files named after it)."""

from hotvcb.filetext import temp_name
from hotvcb.namefit import NAME_MAX, fit


def _size(name):
    return len(name.encode("utf-8"))


def test_a_name_that_fits_is_kept_as_it_is():
    assert fit(".hotvcb-snapshot-asked.", "web.vmx", ".run") == ".hotvcb-snapshot-asked.web.vmx.run"


def test_a_long_name_is_cut_on_a_character_and_stays_its_own():
    a, b = "\u6570" * 75 + "a.vmx", "\u6570" * 75 + "b.vmx"  # 230 bytes each, differing only at the end
    fa, fb = (fit(".hotvcb-snapshot-asked.", n, ".run") for n in (a, b))
    assert fa != fb and _size(fa) <= NAME_MAX and _size(fb) <= NAME_MAX
    assert fa.startswith(".hotvcb-snapshot-asked.\u6570") and fa.endswith(".run")
    assert fa.encode("utf-8").decode("utf-8") == fa  # no character split


def test_a_temp_name_of_the_longest_file_name_fits():
    assert _size(temp_name("x" * NAME_MAX)) <= NAME_MAX
    assert temp_name("STATUS").startswith(".STATUS.") and temp_name("STATUS").endswith(".tmp")
