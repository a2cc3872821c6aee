"""The k-shot episode sampler and the corpus split of lida eval."""

from __future__ import annotations

from pathlib import Path

import pytest

from lida_plugin.evaluate.corpus import Entry, load_corpus
from lida_plugin.evaluate.episodes import make_episode


def _entries() -> list[Entry]:
    out = []
    for lab, n in (("gen-a", 12), ("gen-b", 6), ("gen-c", 3), ("real", 10)):
        for i in range(n):
            kind = "real" if lab == "real" else "generated"
            split = "train" if i % 2 == 0 else "heldout"
            rel = f"{kind}/{lab}/{i:02d}.png"
            out.append(Entry(rel, Path(rel), kind, lab, lab, lab, split))
    return out


@pytest.mark.parametrize("split", ["heldout", "all"])
def test_no_query_in_its_own_gallery_and_deterministic(split):
    es = _entries()
    for k in (1, 2, 5):
        for seed in range(4):
            ep = make_episode(es, k, seed, split)
            assert not set(ep.gallery) & set(ep.queries)
            again = make_episode(es, k, seed, split)
            assert (again.gallery, again.queries, again.skipped) == (ep.gallery, ep.queries, ep.skipped)
            for c in ep.classes:
                assert sum(es[i].label == c for i in ep.gallery) == k
                assert any(es[i].label == c for i in ep.queries)


def test_heldout_split_gallery_from_train_queries_all_heldout():
    es = _entries()
    ep = make_episode(es, 2, 0, "heldout")
    assert all(es[i].split == "train" for i in ep.gallery)
    assert sorted(ep.queries) == sorted(i for i, e in enumerate(es) if e.split == "heldout" and e.label in ep.classes)


def test_seeds_differ_and_galleries_nest_across_k():
    es = _entries()
    g = {s: make_episode(es, 1, s, "all").gallery for s in range(6)}
    assert len({tuple(v) for v in g.values()}) > 1
    for seed in range(3):
        small = make_episode(es, 1, seed, "all")
        big = make_episode(es, 3, seed, "all")
        shared = set(big.classes)
        assert {i for i in small.gallery if es[i].label in shared} <= set(big.gallery)


def test_small_classes_are_reported_as_skipped():
    es = _entries()
    ep = make_episode(es, 3, 0, "heldout")  # gen-c has 2 train images, gen-b 3
    assert "gen-c" in ep.skipped and "gen-c" not in ep.classes
    assert "needs 3 train" in ep.skipped["gen-c"]
    assert not any(es[i].label == "gen-c" for i in ep.gallery + ep.queries)
    ep = make_episode(es, 6, 0, "all")  # gen-b has 6 images: needs 7
    assert "gen-b" in ep.skipped and "gen-a" in ep.classes


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        make_episode(_entries(), 0, 0)


def test_corpus_split_is_the_training_split(tmp_path):
    from conftest import write_png

    from lida_exporters.data import load_folder

    root = tmp_path / "data"
    for kind in ("gen-a", "gen-b"):
        for i in range(5):
            write_png(root / "generated" / kind / f"{kind}-{i}.png", kind, i, size=64)
    for s in ("set1", "set2"):
        for i in range(3):
            write_png(root / "real" / s / f"{s}-{i}.png", "real", 10 * len(s) + i, size=64)
    corpus = {e.relpath: e for e in load_corpus(root)}
    items = load_folder(root)
    assert len(items) == len(corpus) == 16
    for it in items:
        e = corpus[it.relpath]
        assert e.split == it.split
        assert e.label == ("real" if it.kind == "real" else it.label)


@pytest.mark.shared
def test_shared_corpus_classes_and_split(shared_data):
    es = load_corpus(shared_data)
    labels = {e.label for e in es}
    generators = {p.name for p in (shared_data / "generated").iterdir() if p.is_dir()}
    assert labels == generators | {"real"}  # one class per generator folder + one real class
    # one FFHQ face is on the same side of the split in every ldm-sr class and in real/ffhq256
    sides: dict[str, set] = {}
    for e in es:
        stem = Path(e.relpath).stem
        if e.label.startswith("ldm-sr") or e.source == "ffhq256":
            sides.setdefault(stem.rsplit("-", 1)[-1], set()).add(e.split)
    assert sides and all(len(v) == 1 for v in sides.values())
