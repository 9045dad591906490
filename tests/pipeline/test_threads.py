"""`read_ahead`: a reader's next chunk produced in a thread of its own, one ahead at most."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.threads import read_ahead


def test_read_ahead_gives_every_item_in_order_from_another_thread():
    caller = threading.get_ident()
    producers = []

    def items():
        for i in range(50):
            producers.append(threading.get_ident())
            yield i

    assert list(read_ahead(items())) == list(range(50))
    assert set(producers) and caller not in producers
    assert list(read_ahead(iter([]))) == []


def test_read_ahead_holds_one_item_ahead_at_most():
    produced = []

    def items():
        for i in range(10):
            produced.append(i)
            yield i

    def settled(count: int) -> int:  # the thread has run ahead as far as it may
        deadline = time.monotonic() + 10
        while len(produced) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        return len(produced)

    got = read_ahead(items())
    for taken in range(1, 6):
        assert next(got) == taken - 1
        assert settled(taken + 1) == taken + 1  # this one and the next: no further
    got.close()
    assert settled(6) == 6  # a caller that stops leaves the rest unread


def test_read_ahead_raises_a_readers_error_where_the_caller_asks_for_that_item():
    def items():
        yield "first"
        yield "second"
        raise OSError("the store went away")

    got = read_ahead(items())
    assert next(got) == "first"
    assert next(got) == "second"
    with pytest.raises(OSError, match="the store went away"):
        next(got)
