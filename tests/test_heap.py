"""quantkit.heap: freed memory is handed back once the resident set has grown by the set amount, not on
every call."""

from __future__ import annotations

import pytest

from quantkit import heap


def test_the_heap_is_trimmed_once_the_resident_set_has_grown_by_the_set_amount(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resident = iter([1000, 1000 + 99, 1000 + 100, 600, 600 + 50, 600 + 100, 650])
    trims: list[int] = []
    monkeypatch.setattr(heap, "resident_bytes", lambda: next(resident))
    monkeypatch.setattr(heap, "_trim", lambda: lambda pad: trims.append(pad) or 1)
    watch = heap.HeapWatch(growth=100)  # mark 1000
    watch.check()  # +99: nothing
    assert trims == []
    watch.check()  # +100: trimmed, mark read again (600)
    assert trims == [0] and watch.mark == 600
    watch.check()  # +50 over the new mark: nothing
    watch.check()  # +100: trimmed again
    assert trims == [0, 0] and watch.mark == 650


def test_without_malloc_trim_or_proc_the_watch_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_trim", lambda: None)
    monkeypatch.setattr(heap, "resident_bytes", lambda: 10**12)
    heap.HeapWatch(growth=1).check()  # no trim to call: no error
    monkeypatch.setattr(heap, "resident_bytes", lambda: None)
    heap.HeapWatch(growth=1).check()


def test_the_resident_set_is_read_from_proc() -> None:
    resident = heap.resident_bytes()
    assert resident is None or resident > 1 << 20  # a Python process with numpy holds more than 1 MB
