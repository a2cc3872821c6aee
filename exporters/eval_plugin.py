"""The training package as a plugin of ``lida eval`` (entry point ``lida-train`` of the ``lida_plugin`` group).

It implements ``lida_eval_train_baseline`` and ``lida_eval_adapted_condition`` with
:mod:`lida_exporters.eval_conditions`. Every ``lida`` start loads this module, so it imports nothing
heavy: the conditions (numpy, torch) are imported when one runs.
"""

from __future__ import annotations

from lida_plugin import hookimpl


@hookimpl
def lida_eval_train_baseline(
    kind: str, data_root: str, pretrain_steps: int, adapt_steps: int, threads: int | None, progress: bool
) -> str:
    from .eval_conditions import RUNS, train_baseline

    return str(train_baseline(kind, data_root, RUNS, pretrain_steps, adapt_steps, threads, progress))


@hookimpl
def lida_eval_adapted_condition(entries: list, cfg, families: dict[str, str]) -> dict:
    from .eval_conditions import adapted_condition

    return adapted_condition(entries, cfg, families)
