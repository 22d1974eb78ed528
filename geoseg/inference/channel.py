"""Hand-offs between a stream's threads (reader -> network -> writer) that block without polling.

Each wait ends when there is something to take or room to put, when the producer closes the channel, or when
the stream's :class:`Stop` is set: setting it wakes every channel made with it, so a stop (an error, Ctrl-C)
reaches a waiting thread at once instead of at its next 0.1 s poll.
"""

from __future__ import annotations

import collections
import queue
import threading
from typing import Any


class Stop(threading.Event):
    """A stream's stop: a :class:`threading.Event` whose :meth:`set` also wakes the channels waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[threading.Condition] = []

    def wake(self, condition: threading.Condition) -> None:
        """Have :meth:`set` notify ``condition`` (a channel's)."""
        self._waiting.append(condition)

    def set(self) -> None:
        super().set()
        for condition in self._waiting:
            with condition:
                condition.notify_all()


class Channel:
    """A FIFO between threads (bounded by ``maxsize``; 0: unbounded) whose waits end on ``stop`` too.

    :meth:`get` gives None once the stream is stopped, or once the producer has closed the channel and
    every item was taken; items themselves are never None.
    """

    def __init__(self, stop: Stop, maxsize: int = 0):
        self._items: collections.deque = collections.deque()
        self._maxsize, self._stop, self._closed = maxsize, stop, False
        self._condition = threading.Condition()
        stop.wake(self._condition)

    def put(self, item: Any) -> bool:
        """Queue ``item``, waiting for room; False when the stream stopped or the channel closed first."""
        with self._condition:
            self._condition.wait_for(lambda: self._ended() or not self._full())
            if self._ended():
                return False
            self._items.append(item)
            self._condition.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Any:
        """The next item, waiting for one (:class:`queue.Empty` after ``timeout`` s); None once stopped, or
        once closed and empty."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._items or self._ended(), timeout):
                raise queue.Empty
            if self._stop.is_set() or not self._items:
                return None
            item = self._items.popleft()
            self._condition.notify_all()
            return item

    def empty(self) -> bool:
        with self._condition:
            return not self._items

    def close(self) -> None:
        """No more items: a waiting :meth:`get` takes what is left, then None; :meth:`put` refuses."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def _ended(self) -> bool:
        return self._closed or self._stop.is_set()

    def _full(self) -> bool:
        return bool(self._maxsize) and len(self._items) >= self._maxsize
