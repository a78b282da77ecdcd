"""VM_STARTUP_ORDER's wait for each started VM to boot (jobs/power.py await_boot), without a host: bounded
by its limit for a guest whose VMware Tools never run, ended at once by a signal or by a host that cannot
tell, and never raising, so every VM of the order is still started (tests/test_outsider_s33ghetto.py runs
the whole order on esxisim)."""

import logging
import time

import pytest

from hotvcb import interrupt
from hotvcb.errors import HotvcbError
from hotvcb.jobs import power


class Host:
    def __init__(self, answers):
        self.answers, self.asked = answers, 0

    def guest_tools(self, vm):
        self.asked += 1
        answer = self.answers(self.asked)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Vm:
    name = "db"


@pytest.fixture
def control(caplog):
    caplog.set_level(logging.INFO)
    yield lambda answers: power.PowerControl(Host(answers), logging.getLogger("boot"), run=None)
    interrupt.reset()


def test_a_guest_that_boots_is_waited_for(control, caplog, monkeypatch):
    monkeypatch.setattr(power, "BOOT_POLL", 0.05)
    pc = control(lambda n: n >= 3)
    pc.await_boot(Vm(), 10)
    assert pc.host.asked == 3 and "Waiting for db to boot" in caplog.text and "db has booted" in caplog.text


def test_a_guest_without_tools_is_waited_for_up_to_the_limit_only(control, caplog, monkeypatch):
    monkeypatch.setattr(power, "BOOT_POLL", 0.05)
    pc = control(lambda n: False)
    start = time.monotonic()
    pc.await_boot(Vm(), 0.3)
    assert 0.3 <= time.monotonic() - start < 3
    assert "Unable to detect started tools on db" in caplog.text


@pytest.mark.parametrize("answer, said", [(None, ""), (HotvcbError("vim-cmd failed"), "cannot tell")])
def test_a_host_that_cannot_tell_is_not_waited_for(control, caplog, answer, said):
    pc = control(lambda n: answer)
    start = time.monotonic()
    pc.await_boot(Vm(), 60)
    assert time.monotonic() - start < 1 and pc.host.asked == 1
    assert (said in caplog.text) if said else "Waiting" not in caplog.text, caplog.text


def test_a_guest_already_up_is_not_waited_for_nor_reported(control, caplog):
    pc = control(lambda n: True)
    pc.await_boot(Vm(), 60)
    assert pc.host.asked == 1 and caplog.text == ""


def test_a_signal_ends_the_wait_without_raising(control, caplog):
    pc = control(lambda n: False)
    interrupt.stop("test")
    start = time.monotonic()
    pc.await_boot(Vm(), 60)
    assert time.monotonic() - start < 1 and "interrupted" in caplog.text
