"""The back-off of a switch or an address that reconnects too often, and the summarised log of a
flapping switch (controller_app.guard.Backoff, FlapLog), on a clock of their own."""

from __future__ import annotations

import logging

from controller_app.guard import Backoff, FlapLog


def test_backoff_lets_a_burst_through_then_one_per_interval_then_backs_off_doubling():
    b = Backoff(burst=3, interval=10.0, base=1.0, longest=8.0)
    assert [b.attempt("k", t) for t in (0, 0.1, 0.2)] == [0, 0, 0]
    assert b.attempt("k", 0.3) == 1.0                   # no token: a first back-off of 1 s
    assert 0 < b.attempt("k", 0.5) <= 0.8               # refused during it, not lengthened
    assert b.attempt("k", 1.4) == 2.0                   # over, still no token: twice as long
    assert b.attempt("other", 1.4) == 0                 # keys are apart
    assert b.attempt("k", 3.5) == 4.0
    assert b.attempt("k", 7.6) == 8.0 and b.attempt("k", 15.7) == 0   # a token back after 10 s
    assert b.refused("k") == 5
    # quiet long enough to fill the bucket: back-offs start over at 1 s
    for t in (60, 60.1, 60.2):
        assert b.attempt("k", t) == 0
    assert b.attempt("k", 60.3) == 1.0


def test_a_flapping_switch_is_logged_once_then_summarised(caplog):
    caplog.set_level(logging.INFO)
    log = logging.getLogger("test.flap")
    f = FlapLog(log, window=60.0, summary_interval=30.0)
    assert f.up(7, 0.0) is True and not f.quiet(7, 1, 0.1)          # first time up: logged
    assert f.up(7, 0.5) is True and not f.quiet(7, 1, 0.6)          # once more (a reboot): logged too
    assert f.up(7, 1.0) is False                                     # a third time within the window: flapping
    assert sum("switch_flapping" in r.message for r in caplog.records) == 1
    held = sum(f.quiet(7, 22, 1.0 + i) for i in range(20))
    assert held == 20
    f.tick(31.5)
    summaries = [r.message for r in caplog.records if "switch_flapping" in r.message]
    assert len(summaries) == 2 and '"lines_held": 440' in summaries[-1]
    assert f.up(8, 2.0) is True                                      # another switch is not concerned
    f.tick(200.0)                                                    # a window without an "up": stable
    assert any('"event": "switch_stable", "dpid": "0000000000000007"' in r.message for r in caplog.records)
    assert f.up(7, 201.0) is True
