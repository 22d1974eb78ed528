"""The stream's hand-offs block without polling: a stop wakes every waiting thread, a closed channel is
drained before its end is told, and a full one refuses once stopped."""

from __future__ import annotations

import queue
import threading

import pytest

from geoseg.inference.channel import Channel, Stop


def _waiting(action) -> tuple[threading.Thread, list]:
    """``action`` run in a thread that is blocked in it (it has not returned) before this returns."""
    got: list = []
    thread = threading.Thread(target=lambda: got.append(action()), daemon=True)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive() and not got, "the action did not block"
    return thread, got


@pytest.mark.parametrize("side", ["get from an empty channel", "put into a full channel"])
def test_a_stop_wakes_a_thread_waiting_on_a_channel(side):
    stop = Stop()
    channel = Channel(stop, maxsize=1)
    if side == "put into a full channel":
        assert channel.put("first")
        thread, got = _waiting(lambda: channel.put("second"))
    else:
        thread, got = _waiting(channel.get)
    stop.set()
    thread.join(10)  # woken by the stop itself: no poll interval to wait out
    assert not thread.is_alive()
    assert got == [False] if side == "put into a full channel" else got == [None]


def test_a_closed_channel_gives_what_is_left_then_none_and_refuses_more():
    channel = Channel(Stop())
    assert channel.put(1) and channel.put(2)
    channel.close()
    assert not channel.put(3)
    assert [channel.get(), channel.get(), channel.get()] == [1, 2, None]


def test_a_stopped_channel_gives_none_though_items_are_left():
    """A stopped stream drops what was queued (the writer writes no chunk after an error or Ctrl-C)."""
    stop = Stop()
    channel = Channel(stop)
    assert channel.put(1)
    stop.set()
    assert channel.get() is None
    assert not channel.put(2)


def test_a_get_with_a_timeout_tells_empty_like_a_queue():
    with pytest.raises(queue.Empty):
        Channel(Stop()).get(timeout=0.01)
