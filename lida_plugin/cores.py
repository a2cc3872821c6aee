"""Where and how the encoder may run, with nothing heavy imported (the command line checks these before it
loads a model): the cores this process may use and a ceiling for counts a user gives (``--threads``,
``$LIDA_THREADS``, ``--workers``, ``Encoder(threads=...)``), the devices, and ``$LIDA_COUNTS``."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


#: A count of threads or local worker processes above this many times :func:`usable_cores` is refused: it
#: cannot run faster than one per core, and 100,000 ORT threads take minutes and gigabytes to start.
PARALLEL_PER_CORE = 4


def parallel_limit() -> int:
    """The most threads (``--threads``, ``$LIDA_THREADS``) or local workers a command accepts."""
    return PARALLEL_PER_CORE * usable_cores()


def check_parallel(n: int | None, what: str, low: int = 0) -> None:
    """``ValueError`` naming ``what`` when ``n`` is below ``low`` or above :func:`parallel_limit`."""
    if n is None:
        return
    limit = parallel_limit()
    if n < low or n > limit:
        raise ValueError(
            f"{what} must be between {low} and {limit} ({PARALLEL_PER_CORE} x the {usable_cores()} cores here), got {n}"
        )


#: ``--device`` / ``$LIDA_DEVICE`` / ``Encoder(device=...)``.
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
#: ``$LIDA_COUNTS``: who computes a residual model's SPAM counts (docs/model-contract.md, "The feature stage").
COUNTS_SETTINGS = ("auto", "graph")


def counts_setting() -> str:
    """``$LIDA_COUNTS`` (empty or unset: ``auto``), or ``ValueError`` naming a value no command takes."""
    how = os.environ.get("LIDA_COUNTS", "").strip() or "auto"
    if how not in COUNTS_SETTINGS:
        raise ValueError(f"LIDA_COUNTS={how!r}: use 'auto' (the default) or 'graph'")
    return how
