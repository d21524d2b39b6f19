"""Pins racing an operator's hand edits of the policy file (issue 19, item 2): with the
compare-and-swap at the rename no hand edit is lost, whether the editor renames its file into
place or rewrites it in place, takes the policy's advisory lock or not; with the lock, no pin
is lost either. ``hand_edit_race`` is the race the benchmark (``benchmarks.hardening pins``)
runs longer."""

from __future__ import annotations

import os
import threading
import time

import pytest

from classifier.capture.packets import mac_to_int
from controller_app.pins import PinError, PolicyEditor, exchange, policy_lock
from controller_app.policy import load_policy

BASE = "version: 1\ncategories:\n  camera: block\noverrides: {}\n# hand edit 0\n"
MACS = [mac_to_int(f"02:00:00:00:0b:{i:02x}") for i in range(1, 5)]


def _hand_edit(path: str, n: int, how: str) -> None:
    text = open(path).read()
    text = text.replace(f"# hand edit {n - 1}\n", f"# hand edit {n}\n")
    if how == "rename":                          # vim (backupcopy=no), emacs, sed -i
        tmp = f"{path}.swp{n}"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    else:                                        # nano, vim (backupcopy=yes): the same inode
        with open(path, "r+") as fh:
            fh.truncate(0)
            fh.write(text)


def hand_edit_race(path: str, seconds: float, how: str = "rename", locked: bool = False,
                   pause: float = 0.0005, pin_pause: float = 0.0) -> dict:
    """An editor edits ``path`` (a marker line, one more each time) while pins are made and
    released on it as fast as they go, for ``seconds``. An edit is lost when the next edit finds
    its marker gone. Returns the counts."""
    editor = PolicyEditor(path, lock_timeout=2.0)
    stop = threading.Event()
    out = {"edits": 0, "lost": 0, "pins": 0, "refused": 0, "pins_lost": 0}
    pinned: dict = {}

    def pins():
        i = 0
        while not stop.is_set():
            mac = MACS[i % len(MACS)]
            ov = None if pinned.get(mac) else {"category": "plug"}
            try:
                editor.set(mac, ov)
                pinned[mac] = ov is not None
                out["pins"] += 1
            except PinError:
                out["refused"] += 1
            i += 1
            time.sleep(pin_pause)

    t = threading.Thread(target=pins)
    t.start()
    deadline = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < deadline:
            def edit():
                nonlocal n
                text = open(path).read()
                if f"# hand edit {n}\n" not in text:
                    out["lost"] += 1
                    # the lost edit's marker is put back so that the next one can be told
                    text = text.replace(text[text.index("# hand edit "):].split("\n")[0] + "\n", f"# hand edit {n}\n")
                    with open(path, "w") as fh:
                        fh.write(text)
                n += 1
                _hand_edit(path, n, how)
                out["edits"] += 1
            if locked:
                with policy_lock(path) as held:
                    assert held
                    edit()
            else:
                edit()
            time.sleep(pause)
    finally:
        stop.set()
        t.join()
    final = open(path).read()
    if f"# hand edit {n}\n" not in final:
        out["lost"] += 1
    out["undone"] = editor.undone
    if locked:
        ov = load_policy(path).overrides
        out["pins_lost"] = sum(1 for m in MACS if pinned.get(m) and m not in ov)
    return out


@pytest.mark.parametrize("how,pause", [("rename", 0.0005), ("rename", 0.005), ("in-place", 0.0005),
                                       ("in-place", 0.005)])
def test_no_hand_edit_is_lost_to_concurrent_pins(tmp_path, how, pause):
    """Saves every 0.5 or 5 ms, renamed into place or rewritten in place (an editor holding the
    file open for writing across a pin's swap is seen by a read lease: the swap is undone)."""
    path = tmp_path / "policy.yaml"
    path.write_text(BASE)
    got = hand_edit_race(str(path), 3.0, how, pause=pause)
    assert got["edits"] > 100 and got["pins"] + got["refused"] > 50, got
    assert got["lost"] == 0, got
    load_policy(str(path))                     # valid at the end


def test_under_the_lock_neither_hand_edits_nor_pins_are_lost(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(BASE)
    got = hand_edit_race(str(path), 2.0, "in-place", locked=True, pin_pause=0.002)
    assert got["edits"] > 50 and got["pins"] > 20, got
    assert got["lost"] == 0 and got["pins_lost"] == 0, got


def test_a_pin_whose_file_changed_at_the_rename_puts_the_hand_edit_back(tmp_path, monkeypatch):
    """The compare-and-swap itself: a hand edit renamed in between the pin's read and its rename
    stays, and the pin is refused (409) with the file as the operator left it."""
    import controller_app.pins as pins
    path = tmp_path / "policy.yaml"
    path.write_text(BASE)
    ed = PolicyEditor(str(path))
    real = pins.PolicyEditor._replace

    def sneaky(self, text, read):
        _hand_edit(str(path), 1, "rename")     # the operator saves just before the rename
        return real(self, text, read)
    monkeypatch.setattr(pins.PolicyEditor, "_replace", sneaky)
    with pytest.raises(PinError) as err:
        ed.set(MACS[0], {"category": "plug"})
    assert err.value.status == 409 and "changed while it was being edited" in str(err.value)
    assert path.read_text() == BASE.replace("# hand edit 0", "# hand edit 1")
    assert ed.conflicts == 1
    assert [p.name for p in tmp_path.iterdir()] == ["policy.yaml.lock", "policy.yaml"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["policy.yaml", "policy.yaml.lock"]


def test_a_pin_waits_for_an_editor_holding_the_lock_and_gives_up_with_409(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(BASE)
    ed = PolicyEditor(str(path), lock_timeout=0.3)
    with policy_lock(str(path)) as held:
        assert held
        t = time.monotonic()
        with pytest.raises(PinError) as err:
            ed.set(MACS[0], {"category": "plug"})
        assert err.value.status == 409 and "locked for editing" in str(err.value)
        assert 0.25 < time.monotonic() - t < 2
    ed.set(MACS[0], {"category": "plug"})
    assert os.stat(str(path) + ".lock").st_mode & 0o777 == 0o600


def test_exchange_swaps_two_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    b.write_text("B")
    if not exchange(str(a), str(b)):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available here (the pin editor compares before renaming)")
    assert a.read_text() == "B" and b.read_text() == "A"
