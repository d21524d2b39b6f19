"""devices.csv in its three layouts -> one labelled dataset description."""

from __future__ import annotations

import shutil

import pytest

from classifier.capture.labels import CATEGORIES, LabelError, load_datasets, load_labels
from classifier.capture.packets import mac_to_int


def _touch_capture(path, synth_capture):
    shutil.copy(synth_capture[0], path)


def test_by_mac_layout(synth_capture, tmp_path):
    for name in ("a.pcap", "b.pcap"):
        _touch_capture(tmp_path / name, synth_capture)
    shutil.copy(synth_capture[1], tmp_path / "devices.csv")
    ds = load_labels(tmp_path / "devices.csv")
    assert len(ds.captures) == 2
    net = synth_capture[2]
    cap = ds.for_path(str(tmp_path / "a.pcap"))
    assert len(cap.devices) == len(net.devices)
    assert cap.gateways == {mac_to_int(net.gateway_mac)}
    dev = ds.label(str(tmp_path / "b.pcap"), net.devices[0].mac)
    assert dev.category == net.devices[0].category and dev.dataset == tmp_path.name


def test_by_folder_layout_keeps_units_apart(synth_capture, tmp_path):
    for folder in ("CamUnit1", "CamUnit2"):
        (tmp_path / folder).mkdir()
        _touch_capture(tmp_path / folder / "Setup-1.pcap", synth_capture)
        _touch_capture(tmp_path / folder / "Setup-2.pcap", synth_capture)
    (tmp_path / "devices.csv").write_text(
        "folder,mac,device,category\n"
        "CamUnit1,02:00:00:00:01:01,Cam (unit 1),camera\n"
        "CamUnit2,02:00:00:00:01:01,Cam (unit 2),camera\n")
    ds = load_labels(tmp_path / "devices.csv", dataset="lab")
    assert len(ds.captures) == 4
    keys = {d.key for d in ds.devices()}
    assert keys == {"lab/CamUnit1", "lab/CamUnit2"}


def test_by_file_layout(synth_capture, tmp_path):
    _touch_capture(tmp_path / "one.pcap", synth_capture)
    (tmp_path / "devices.csv").write_text("file,mac,device,category\none.pcap,02:00:00:00:01:02,Plug,plug\n")
    ds = load_labels(tmp_path / "devices.csv")
    assert [d.category for d in ds.devices()] == ["plug"]


@pytest.mark.parametrize("text,expect", [
    ("mac,device\n", "line 1: missing column(s) category"),
    ("mac,device,category\nnot-a-mac,x,camera\n", "line 2: key 'mac'"),
    ("mac,device,category\n02:00:00:00:00:01,x,toaster\n", "line 2: key 'category': 'toaster'"),
    ("folder,mac,device,category\nNope,02:00:00:00:00:01,x,camera\n", "line 2: key 'folder': no folder"),
    ("file,mac,device,category\n\n\nmissing.pcap,02:00:00:00:00:01,x,camera\n", "line 4: key 'file': no file"),
])
def test_label_errors_name_file_line_and_key(tmp_path, text, expect):
    (tmp_path / "devices.csv").write_text(text)
    with pytest.raises(LabelError) as info:
        load_labels(tmp_path / "devices.csv")
    assert str(tmp_path / "devices.csv") in str(info.value) and expect in str(info.value)


@pytest.mark.shared
def test_shared_datasets(datasets):
    ds = load_datasets([datasets])
    by_set = {}
    for c in ds.captures:
        by_set.setdefault(c.dataset, []).append(c)
    assert len(by_set["iot-sentinel"]) == 550
    assert len(by_set["longterm"]) == 8
    assert len(by_set["home"]) == 19
    devs = ds.devices()
    assert sum(d.dataset == "iot-sentinel" for d in devs) == 31
    assert sum(d.dataset == "longterm" for d in devs) == 8
    assert sum(d.dataset == "home" for d in devs) == 15
    assert {d.category for d in devs} <= set(CATEGORIES)
    assert mac_to_int("dc:a6:32:ce:31:63") in ds.gateways()
    # the door sensor was set up through the hub: same MAC, its own label per folder
    door = [c for c in by_set["iot-sentinel"] if "/D-LinkDoorSensor/" in c.path][0]
    hub = [c for c in by_set["iot-sentinel"] if "/D-LinkHomeHub/" in c.path][0]
    mac = mac_to_int("1c:5f:2b:aa:fd:4e")
    assert door.devices[mac].unit == "D-LinkDoorSensor" and hub.devices[mac].unit == "D-LinkHomeHub"
