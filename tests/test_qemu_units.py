"""The QMP client against a scripted server, the driver's helpers, and copies without a VM."""

import json
import os
import shutil
import socket
import threading

import pytest

from qemuvm import QemuVm, make_initial, needs_qemu, qemu_img, same_content, short_dir

from hotvcb.errors import HostError, SnapshotError
from hotvcb.hosts import qemuimg
from hotvcb.hosts.qemu import QemuHost
from hotvcb.hosts.qemu_blockgraph import below_filters
from hotvcb.hosts.qemu_overlay_names import DEVICE_OVERLAYS, overlay_name, overlay_path
from hotvcb.hosts.qmp import QmpClient, QmpCommandError, QmpError, QmpTimeout, QmpUnavailable
from hotvcb.jobs.leftovers import SNAPSHOT_PREFIX
from hotvcb.localshell import LocalShell
from hotvcb.model import Disk

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}


class FakeQemu(threading.Thread):
    """Serves one QMP client: greeting, then `answer(request) -> [messages]` per request."""

    def __init__(self, path, answer, greet=True):
        super().__init__(daemon=True)
        self.path, self.answer, self.greet = path, answer, greet
        self.requests = []
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(path)
        self.server.listen(1)
        self.start()

    def run(self):
        conn, _ = self.server.accept()
        with conn, conn.makefile("rwb") as f:
            if self.greet:
                f.write(json.dumps(GREETING).encode() + b"\r\n")
                f.flush()
            for line in f:
                req = json.loads(line)
                self.requests.append(req)
                if req["execute"] == "qmp_capabilities":
                    replies = [{"return": {}, "id": req.get("id")}]
                else:
                    replies = self.answer(req)
                for msg in replies:
                    f.write(json.dumps(msg).encode() + b"\r\n")
                f.flush()

    def close(self):
        self.server.close()


@pytest.fixture
def sock_dir():
    d = short_dir("hqu")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_events_between_a_command_and_its_answer_are_collected_and_stale_answers_skipped(sock_dir):
    path = os.path.join(sock_dir, "vm.qmp")

    def answer(req):
        return [
            {"return": "stale", "id": "someone-else"},
            {"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "running"}, "timestamp": {}},
            {"return": {"status": "running"}, "id": req["id"]},
        ]

    fake = FakeQemu(path, answer)
    with QmpClient(path, timeout=5) as qmp:
        assert qmp.greeting["version"]["qemu"]["major"] == 7
        assert qmp.execute("query-status") == {"status": "running"}
        assert [e["event"] for e in qmp.events] == ["JOB_STATUS_CHANGE"]
        assert qmp.wait_event(lambda e: e["data"]["id"] == "j", 1)["data"]["status"] == "running"
        assert qmp.events == []
    assert fake.requests[0]["execute"] == "qmp_capabilities"
    assert fake.requests[1] == {"execute": "query-status", "id": fake.requests[1]["id"]}
    fake.close()


def test_an_error_answer_carries_qemus_class_and_desc(sock_dir):
    path = os.path.join(sock_dir, "vm.qmp")
    fake = FakeQemu(path, lambda req: [{"error": {"class": "DeviceNotFound", "desc": "no drive9"}, "id": req["id"]}])
    with QmpClient(path, timeout=5) as qmp:
        with pytest.raises(QmpCommandError) as err:
            qmp.execute("block-commit", {"device": "drive9"})
    assert isinstance(err.value, HostError)
    assert (err.value.command, err.value.error_class, err.value.desc) == ("block-commit", "DeviceNotFound", "no drive9")
    assert "no drive9" in str(err.value) and path in str(err.value)
    fake.close()


def test_waits_are_bounded(sock_dir):
    path = os.path.join(sock_dir, "silent.qmp")
    fake = FakeQemu(path, lambda req: [], greet=False)  # like a monitor busy with another client
    with pytest.raises(QmpTimeout) as err:
        QmpClient(path, timeout=0.5).connect()
    assert "greeting" in str(err.value)
    fake.close()
    path = os.path.join(sock_dir, "mute.qmp")
    fake2 = FakeQemu(path, lambda req: [])
    with QmpClient(path, timeout=5) as qmp:
        with pytest.raises(QmpTimeout):
            qmp.execute("query-status", timeout=0.3)
        assert qmp.wait_event(lambda e: True, 0.2) is None
    fake2.close()


def test_a_monitor_whose_listen_queue_is_full_is_waited_for_then_a_timeout(sock_dir, monkeypatch):
    """QEMU serves one QMP client and queues one more: a connect beyond that fails EAGAIN at once (CI saw a
    backup fail so, on a monitor the test's own look had just left). hotvcb tries again until its timeout,
    and gets in once the monitor is free."""
    path = os.path.join(sock_dir, "busy.qmp")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(0)
    queued = socket.socket(socket.AF_UNIX)
    queued.connect(path)  # the one connection the queue holds: the next one is refused EAGAIN
    try:
        with pytest.raises(QmpTimeout) as err:
            QmpClient(path, timeout=0.3).connect()
        assert "connection" in str(err.value)

        busy, got = threading.Event(), []
        real = QmpClient._connected

        def connected(self, deadline):
            sock = real(self, deadline)
            if sock is None:
                busy.set()
            return sock

        monkeypatch.setattr(QmpClient, "_connected", connected)
        client = threading.Thread(target=lambda: got.append(QmpClient(path, timeout=60).connect()), daemon=True)
        client.start()
        assert busy.wait(30), "the client never met a full queue"
        first, _ = server.accept()
        first.close()  # the other client leaves: the queue has room again
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(json.dumps(GREETING).encode() + b"\r\n")
            f.flush()
            req = json.loads(f.readline())
            f.write(json.dumps({"return": {}, "id": req.get("id")}).encode() + b"\r\n")
            f.flush()
            client.join(30)
            assert got and got[0].greeting == GREETING["QMP"]
            got[0].close()
    finally:
        queued.close()
        server.close()


def test_no_qemu_behind_the_socket_is_unavailable(sock_dir):
    with pytest.raises(QmpUnavailable):
        QmpClient(os.path.join(sock_dir, "missing.qmp"), timeout=1).connect()
    stale = os.path.join(sock_dir, "stale.qmp")
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()  # the file stays, nobody listens: QEMU died
    with pytest.raises(QmpUnavailable):
        QmpClient(stale, timeout=1).connect()


def test_garbage_is_a_qmp_error(sock_dir):
    path = os.path.join(sock_dir, "bad.qmp")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        conn.sendall(b"not json\n")
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with pytest.raises(QmpError) as err:
        QmpClient(path, timeout=5).connect()
    assert "not JSON" in str(err.value)
    t.join(5)
    server.close()


def test_overlay_names_and_progress():
    assert SNAPSHOT_PREFIX == "hotvcb-snapshot-"  # the driver recognises ours by it (OUR_MARK)
    o = overlay_path("/vm/disk.qcow2", "hotvcb-snapshot-2024-01-02_03-04-05")
    assert o == "/vm/disk.qcow2.hotvcb-snapshot-2024-01-02_03-04-05.qcow2"
    assert overlay_name(o, "/vm/disk.qcow2") == "hotvcb-snapshot-2024-01-02_03-04-05"
    assert overlay_name(o, "/other/disk.qcow2") is None
    assert overlay_name("/vm/disk.qcow2.qcow2", "/vm/disk.qcow2") is None
    assert overlay_name("/vm/template.qcow2", "/vm/base.qcow2") is None
    # an image on a block device: its overlay on real storage, named one to one after the device's path
    name = "hotvcb-snapshot-2024-01-02_03-04-05"
    lv, lv2 = overlay_path("/dev/vg0/a-b", name), overlay_path("/dev/vg0-a/b", name)
    assert lv.startswith(DEVICE_OVERLAYS + "/") and lv != lv2
    assert overlay_name(lv, "/dev/vg0/a-b") == name and overlay_name(lv, "/dev/vg0-a/b") is None
    assert overlay_name("/dev/vg0/a-b." + name + ".qcow2", "/dev/vg0/a-b") == name  # one made beside it before
    # two LVs whose names differ by a dotted suffix: web.data's overlay is not web's (our names have no dot)
    assert overlay_name(overlay_path("/dev/vg0/web.data", name), "/dev/vg0/web") is None
    assert overlay_name("/vm/web.data." + name + ".qcow2", "/vm/web") is None
    # a device deep in a folder tree: a name that fits in 255 bytes, still one to one
    deep = "/dev/disk/by-path/" + "tier-1-replicated/" * 12
    long1, long2 = overlay_path(deep + "data-disk-1", name), overlay_path(deep + "data-disk-2", name)
    assert long1.startswith(DEVICE_OVERLAYS + "/") and long1 != long2
    assert len(os.path.basename(long1 + ".description").encode()) <= 255
    assert overlay_name(long1, deep + "data-disk-1") == name and overlay_name(long1, deep + "data-disk-2") is None
    # an image file whose name is long (a provisioning tool's): its overlay beside it, named so that its
    # description's claim `<overlay>.description.<pid>-new` fits; one named whole by an older hotvcb is still ours
    image = "/vm/" + "\u00fc" * 105 + "-data.qcow2"
    short = overlay_path(image, name)
    assert short.startswith("/vm/") and short != image + "." + name + ".qcow2"
    assert len(os.path.basename(short + ".description.4194304-new").encode()) <= 255
    assert overlay_name(short, image) == name and overlay_name(short, image[:-7] + "-2.qcow2") is None
    assert overlay_name(image + "." + name + ".qcow2", image) == name
    assert qemuimg.percent("    (12.34/100%)") == 12
    assert qemuimg.percent("(0.00/100%)    (100.00/100%)") == 100
    assert qemuimg.percent("qemu-img: error") is None
    assert qemuimg.error_line("    (0.00/100%)\rqemu-img: Could not open 'x': No such file\n") == \
        "qemu-img: Could not open 'x': No such file"


@needs_qemu
@pytest.mark.parametrize("fmt,files", [
    ("qcow2", ["d.qcow2"]),
    ("raw", ["d.raw"]),
    ("2gbsparse", ["d.vmdk", "d-s001.vmdk"]),
    ("eagerzeroedthick", ["d.vmdk", "d-flat.vmdk"]),
])
def test_copy_disk_writes_each_format(tmp_path, fmt, files):
    src = str(tmp_path / "d.img")
    make_initial(src, 4 << 20, 1 << 20)
    out = tmp_path / "out"
    out.mkdir()
    host = QemuHost(LocalShell(), str(tmp_path))
    disk = Disk(key="drive0", path=src, datastore="", adapter="")
    seen = []
    written = host.copy_disk(disk, str(out / "d.img"), fmt, seen.append)
    assert written == files and sorted(os.listdir(str(out))) == sorted(files)
    assert seen and seen[-1] == 100
    assert same_content(src, str(out / files[0]))
    assert host.bytes_needed(disk, "eagerzeroedthick") == 4 << 20
    assert host.bytes_needed(disk, "thin") <= 4 << 20
    if fmt == "eagerzeroedthick":
        assert os.stat(str(out / "d-flat.vmdk")).st_blocks * 512 >= 4 << 20


@needs_qemu
def test_a_failed_copy_leaves_no_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    host = QemuHost(LocalShell(), str(tmp_path))
    host._formats[str(tmp_path / "gone.qcow2")] = "qcow2"  # noqa: SLF001 - as load_vm would have it
    disk = Disk(key="drive0", path=str(tmp_path / "gone.qcow2"), datastore="", adapter="")
    with pytest.raises(HostError) as err:
        host.copy_disk(disk, str(out / "gone.qcow2"), "thin", None)
    assert "gone.qcow2" in str(err.value)
    assert os.listdir(str(out)) == []
    with pytest.raises(HostError):
        host.copy_disk(disk, str(out / "gone.qcow2"), "vhdx", None)


@needs_qemu
def test_driver_on_a_live_vm_and_after_it_is_gone(tmp_path):
    sockets = short_dir("hqv")
    inv, ctl = os.path.join(sockets, "inv"), os.path.join(sockets, "ctl")
    os.makedirs(inv)
    os.makedirs(ctl)
    image = str(tmp_path / "v.qcow2")
    assert qemu_img("create", "-f", "qcow2", image, "8M").returncode == 0
    vm = QemuVm("v", image, "qcow2", inv, ctl, str(tmp_path / "qemu.log"))
    try:
        host = QemuHost(LocalShell(), inv)
        (ref,) = host.list_vms()
        assert (ref.name, ref.vmx_path) == ("v", os.path.join(inv, "v.qmp"))
        loaded = host.load_vm(ref)
        assert [(d.key, d.path, d.skip_reason) for d in loaded.disks] == [("drive0", image, "")]  # no CD-ROM
        assert host.power_state(loaded) == "on"
        assert host.snapshots(loaded) == [] and host.delta_files(loaded) == []
        with pytest.raises(SnapshotError, match="guest agent"):
            host.create_snapshot(loaded, "hotvcb-snapshot-x", "", False, True, 30)
        snap = host.create_snapshot(loaded, "hotvcb-snapshot-x", "test", False, False, 30)
        assert [s.name for s in host.snapshots(loaded)] == ["hotvcb-snapshot-x"]
        assert host.delta_files(loaded) == [overlay_path(image, "hotvcb-snapshot-x")]
        again = host.load_vm(ref)
        assert again.disks[0].path == image  # below our overlay
        with pytest.raises(SnapshotError, match="no longer"):
            host.create_snapshot(loaded, "hotvcb-snapshot-y", "test", False, False, 30)
        host.remove_snapshot(loaded, snap, 60)
        assert host.snapshots(loaded) == [] and host.delta_files(loaded) == []
        with vm.qmp() as qmp:
            qmp.execute("stop")
        assert host.power_state(loaded) == "suspended"
        host.power_on(loaded)
        assert host.power_state(loaded) == "on"
        vm.quit()
        assert host.power_state(loaded) == "off"
        with pytest.raises(HostError, match="cannot start a QEMU VM"):
            host.power_on(loaded)
    finally:
        vm.kill()
        shutil.rmtree(sockets, ignore_errors=True)



@needs_qemu
def test_remove_snapshot_finishes_a_commit_a_killed_run_started(tmp_path):
    sockets = short_dir("hqj")
    inv, ctl = os.path.join(sockets, "inv"), os.path.join(sockets, "ctl")
    os.makedirs(inv)
    os.makedirs(ctl)
    image = str(tmp_path / "j.qcow2")
    assert qemu_img("create", "-f", "qcow2", image, "8M").returncode == 0
    vm = QemuVm("j", image, "qcow2", inv, ctl, str(tmp_path / "qemu.log"))
    try:
        host = QemuHost(LocalShell(), inv)
        loaded = host.load_vm(host.list_vms()[0])
        snap = host.create_snapshot(loaded, "hotvcb-snapshot-j", "test", False, False, 30)
        with vm.qmp() as qmp:
            vm.write(qmp, 0x42, 0, 65536)
            top = [d for d in qmp.execute("query-block") if d["device"] == "drive0"][0]["inserted"]["node-name"]
            base = [n for n in qmp.execute("query-named-block-nodes", {"flat": True})
                    if n["file"] == image and n["drv"] == "qcow2"][0]["node-name"]
            qmp.execute("block-commit", {"job-id": "hotvcb-commit-drive0", "device": top, "base-node": base})
        assert [s.name for s in host.snapshots(loaded)] == ["hotvcb-snapshot-j"]
        host.remove_snapshot(loaded, snap, 60)  # the job is running or ready: it is driven to its end
        assert host.snapshots(loaded) == [] and host.delta_files(loaded) == []
        vm.quit()
        expected = str(tmp_path / "expected.raw")
        make_initial(expected, 8 << 20, 0)
        with open(expected, "r+b") as f:
            f.write(b"\x42" * 65536)
        assert same_content(expected, image)
    finally:
        vm.kill()
        shutil.rmtree(sockets, ignore_errors=True)


def test_a_json_name_through_filter_nodes_is_the_file_below_them():
    """qcow2 over preallocate (or throttle) over file: QEMU names the format node json:{...}; it is that file.
    Anything more (a network protocol, options on the file node) stays as QEMU named it."""
    name = "json:" + json.dumps({"driver": "qcow2", "file": {"driver": "preallocate", "file": {
        "driver": "throttle", "throttle-group": "g", "file": {"driver": "file", "filename": "/vm/a.qcow2"}}}})
    assert below_filters(name) == "/vm/a.qcow2"
    nbd = "json:" + json.dumps({"driver": "qcow2", "file": {"driver": "nbd", "server": {"host": "h"}}})
    assert below_filters(nbd) == nbd
    opts = "json:" + json.dumps({"driver": "raw", "file": {"driver": "file", "filename": "/vm/b", "x": 1}})
    assert below_filters(opts) == opts
    assert below_filters("/vm/c.raw") == "/vm/c.raw"
    assert below_filters("json:{not json") == "json:{not json"
