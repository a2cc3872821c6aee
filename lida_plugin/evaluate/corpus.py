"""The evaluation corpus: the ``../shared/data`` layout and the train/held-out split.

Layout: ``<root>/generated/<generator>/*.png`` (one class per generator) and
``<root>/real/<set>/*.png`` (all real sets together form **one** class, ``real``, as in the
paper's protocol); ``<root>/manifest.tsv`` supplies each generator's family.

The split is :func:`lida_plugin.dataset.assign_split` (torch-free; the training code uses it too, so
the rule exists once): per folder, files ordered by ``sha256`` of a content key, the first
``ceil(n/2)`` are *train*, the rest *held-out*; the seven ldm-sr checkpoints and the real FFHQ
faces they were made from share one key per face, so a face is on the same side everywhere.
The shipped model is trained on the train half only, so its queries must come from the held-out
half (``--split heldout``, the default).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REAL = "real"
#: The baselines ``lida eval --train-baseline`` can train (through the ``lida_eval_train_baseline`` hook).
BASELINES = ("rgb", "scaled-matched", "resized", "authors")


class CorpusError(ValueError):
    """The data folder is missing, empty or not in the expected layout."""


class ConditionUnavailable(RuntimeError):
    """An evaluation condition cannot run here (e.g. it trains and torch is not installed)."""


#: What to say when no plugin implements the training conditions.
NO_TRAINER = (
    "lida's training package registers them through the entry point lida-train; install the train extra"
    " (pip install -e '.[train]') and check that LIDA_LOAD_PLUGINS does not leave it out"
)


@dataclass(frozen=True)
class Entry:
    relpath: str
    path: Path
    kind: str  # "generated" | "real"
    label: str  # the class: generator name, or "real" for every real set
    source: str  # the folder: generator name or real set name
    family: str
    split: str  # "train" | "heldout"


def load_corpus(root: str | Path) -> list[Entry]:
    """Every image under ``root`` with its class, family and split (no decoding)."""
    from ..dataset import DataError, assign_split, scan

    root = Path(root)
    try:
        found = scan(root)
    except DataError as exc:
        raise CorpusError(str(exc)) from None
    by_folder: dict[tuple[str, str], list[str]] = {}
    for kind, folder, _, f in found:
        by_folder.setdefault((kind, folder), []).append(f.name)
    splits = {k: assign_split(v, *k) for k, v in by_folder.items()}
    out = []
    for kind, folder, family, f in found:
        label = REAL if kind == "real" else folder
        out.append(
            Entry(
                relpath=str(f.relative_to(root)),
                path=f,
                kind=kind,
                label=label,
                source=folder,
                family=REAL if kind == "real" else family,
                split=splits[(kind, folder)][f.name],
            )
        )
    out.sort(key=lambda e: e.relpath)
    return out


def families(entries: list[Entry]) -> dict[str, str]:
    return {e.label: e.family for e in entries}


def describe(entries: list[Entry]) -> dict:
    """Counts per class and split (for the report)."""
    per: dict[str, Counter] = {}
    for e in entries:
        per.setdefault(e.label, Counter())[e.split] += 1
    return {
        lab: {"train": c["train"], "heldout": c["heldout"], "total": c["train"] + c["heldout"]}
        for lab, c in sorted(per.items())
    }
