"""An autouse fixture that fails a test which leaves threads running (watchdog's own suite does the same).

Test modules opt in with ``from leakcheck import no_thread_leaks  # noqa: F401``.
"""

from __future__ import annotations

import threading
import time

import pytest


@pytest.fixture(autouse=True)
def no_thread_leaks():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not leaked, f"threads leaked: {[t.name for t in leaked]}"
