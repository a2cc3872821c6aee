"""A file on its way through the watcher's stages, and how a stage takes a batch of them from its queue."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from ..attribute import Prepared
from ..journal import Entry


@dataclass
class Item:
    path: str
    rel: str
    stat: tuple[int, int, int]
    ready_at: float
    sha256: str = ""
    prepared: Prepared | None = None
    record: dict[str, Any] | None = None
    adopted: bool = False
    duplicate_of: str | None = None
    renamed_from: Entry | None = None  # the journal row of a name that is gone whose result this one takes over
    waiters: list[Item] = field(default_factory=list)
    sealed: bool = False  # in the writer: duplicate_of no longer changes


def take_batch(q: queue.Queue, first: Item, limit: int, wait=lambda: 0.0) -> tuple[list[Item], bool]:
    """``first`` and whatever else ``q`` holds, up to ``limit`` items (waiting at most ``wait()`` seconds for
    each); and whether the end-of-work sentinel (``None``) was taken."""
    items = [first]
    while len(items) < limit:
        w = wait()
        try:
            nxt = q.get(timeout=w) if w > 0 else q.get_nowait()
        except queue.Empty:
            break
        if nxt is None:
            return items, True
        items.append(nxt)
    return items, False
