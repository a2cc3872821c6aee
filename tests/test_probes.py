"""The diagnostic probes (``python -m lida_exporters.probes``) on a tiny synthetic corpus."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from conftest import write_png

pytest.importorskip("torch")
from lida_exporters import probes  # noqa: E402


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "data"
    for kind, folder in (("gen-a", "generated/gen-a"), ("gen-b", "generated/gen-b"), ("real", "real/r1")):
        for i in range(6):
            write_png(root / folder / f"{kind}-{i}.png", kind, 500 + i)
    return root


def _rows(table: str) -> list[tuple[str, list[float]]]:
    """The numeric rows of a Markdown table: (first cell, numbers)."""
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        nums = cells[1:]
        nums = nums[:-1] if nums and re.fullmatch(r"(-?\d+(\.\d+)?|nan) .+", nums[-1]) else nums  # a named cell
        if len(cells) > 1 and nums and all(re.fullmatch(r"-?\d+(\.\d+)?%?|nan", c) for c in nums):
            rows.append((cells[0], [float(c.rstrip("%")) for c in nums]))
    return rows


def _run(capsys, *argv) -> list[tuple[str, list[float]]]:
    assert probes.main(list(argv) + ["--threads", "1"]) == 0
    return _rows(capsys.readouterr().out)


def test_ceiling_separates_the_synthetic_generators(corpus, tiny_model, capsys):
    rows = dict(_run(capsys, "ceiling", "--data", str(corpus), "--model", str(tiny_model)))
    allc, named, ldm, real = rows["nearest class mean of all train images"]
    assert named == 100.0  # the tiny encoder's synthetic generators are trivially separable
    assert ldm != ldm  # no ldm-sr class in this corpus: nan, not a made-up number
    assert len(rows) == 3


def test_whitening_reports_every_transform(corpus, tiny_model, capsys):
    rows = dict(_run(capsys, "whitening", "--data", str(corpus), "--model", str(tiny_model)))
    assert list(rows)[0] == "none (the runtime today)" and len(rows) == 7
    assert all(0 <= r[0] <= 100 for r in rows.values())  # 1-shot Rank-1
    assert all(r[1] != r[1] for r in rows.values())  # 3 train images a class: no 5-shot episode, so nan


def test_resize_gate_thresholds_hold_on_train_originals(corpus, tiny_model, capsys):
    rows = _run(capsys, "resize-gate", "--data", str(corpus), "--model", str(tiny_model))
    assert [name for name, _ in rows] == ["encoder embedding"] * 2 + ["spectral + low-bit statistics"] * 2
    assert [r[0] for _, r in rows] == [5.0, 1.0, 5.0, 1.0]  # the share of train originals each threshold flags
    # held-out original, 0.5x, 0.75x, off-grid crop, and the originals of a family left out of the fit
    assert all(len(r) == 6 and all(0 <= v <= 100 for v in r) for _, r in rows)


@pytest.mark.parametrize("head_noise", [False, True], ids=["version-1 head", "version-2 head"])
def test_real_set_out_fits_without_each_real_set(corpus, head_noise):
    from lida_exporters.spam_model import VERSION1

    for i in range(6):
        write_png(corpus / "real" / "r2" / f"other-{i}.png", "real", 900 + i)
        write_png(corpus / "real" / "r3" / f"third-{i}.png", "real", 950 + i)
    r = replace(VERSION1, T=1, colour=False, pca_dim=8, dim=4)
    if head_noise:  # the version-2 head: noised copies in the fit, the noise floor read, noised versions calibrated
        r = replace(r, det_noise_copies=1, noise_generated=True, head_noise=True)
    table = probes.real_set_out(corpus, None, 1, cache=None, recipe=r)
    assert ("version 2" in table) == head_noise
    rows = [
        [c.strip() for c in ln.strip("|").split("|")]
        for ln in table.splitlines()
        if ln.startswith("| r") and "real set" not in ln
    ]
    assert [(c[0], c[1].split(",")[-1].split()[0], int(c[2])) for c in rows] == [
        ("r1", "in", 3), ("r2", "in", 3), ("r3", "in", 3), ("r1", "left", 6), ("r2", "left", 6), ("r3", "left", 6),
        ("r1", "threshold", 6), ("r2", "threshold", 6), ("r3", "threshold", 6)]  # fmt: skip
    for c in rows:  # flagged, noised versions flagged, TPR, threshold
        assert all(0 <= float(v.rstrip("%")) <= 100 for v in c[3:6]) and 0 <= float(c[6]) <= 1
    left = [c for c in rows if c[1].startswith("left out (all")]
    pooled = re.search(r"pooled: ([\d.]+)% of (\d+) photos flagged, ([\d.]+)% of their noised", table)
    assert int(pooled[2]) == 18
    for col, group in ((3, 1), (4, 3)):  # the pooled rates are the left-out rows' rates weighted by their photos
        assert float(pooled[group]) == pytest.approx(sum(float(c[col].rstrip("%")) * 6 for c in left) / 18, abs=0.06)


def test_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert probes.main(["ceiling", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_crop_level_ceiling_sees_crop_structure_and_not_noise():
    """``separability.crop_ceiling``: classes that differ per crop are found from the crops of
    held-out images; shuffled labels stay near chance (so a high number is not a leak)."""
    import numpy as np

    from lida_exporters.separability import CROP_MLP, crop_ceiling

    rng = np.random.default_rng(0)
    n_img, k, dim = 120, 8, 40
    labels = np.array([f"c{i % 3}" for i in range(n_img)])
    train = np.arange(n_img) % 2 == 0
    owner = np.repeat(np.arange(n_img), k)
    centres = rng.normal(size=(3, dim)) * 0.6
    x = rng.normal(size=(n_img * k, dim)) + centres[[int(v[1]) for v in labels]][owner]
    acc, tr_acc = crop_ceiling(x, owner, labels, train, CROP_MLP[:1], pca=16)
    assert acc > 0.9 and tr_acc > 0.9
    shuffled = rng.permutation(labels)
    acc0, _ = crop_ceiling(x, owner, shuffled, train, CROP_MLP[:1], pca=16)
    assert acc0 < 0.6


@pytest.mark.parametrize("head_noise", [False, True], ids=["version-1 head", "version-2 head"])
def test_family_out_leaves_each_fold_of_families_out(tmp_path, head_noise):
    from lida_exporters.spam_model import VERSION1

    root = tmp_path / "data"
    for k, g in enumerate(("gen-a", "gen-b", "gen-c")):
        for i in range(6):
            write_png(root / "generated" / g / f"{g}-{i}.png", g, 100 * k + i)
    for i in range(8):
        write_png(root / "real" / "r1" / f"real-{i}.png", "real", 700 + i)
    r = replace(VERSION1, T=1, colour=False, pca_dim=8, dim=4, det_resize_copies=0)
    if head_noise:
        r = replace(r, det_noise_copies=1, noise_generated=True, head_noise=True)
    table = probes.family_out(root, None, 1, cache=None, recipe=r)
    assert f"detection head version {2 if head_noise else 1}" in table
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines() if ln.startswith("| ")]
    folds = rows[1:-1]
    # no manifest: each generator is its own family; 3 families in 5 folds leave two folds empty (skipped)
    assert sorted(c[0] for c in folds) == ["gen-a", "gen-b", "gen-c"]
    assert all(int(c[1]) == 3 and 0 <= float(c[2]) <= 1 and 0 <= float(c[3].rstrip("%")) <= 100 for c in folds)
    assert rows[-1][0] == "**mean of folds / all**" and int(rows[-1][1]) == 9


def test_cfa_scores_tables_every_version_and_crop_count(corpus, capsys):
    assert probes.main(["cfa-scores", "--data", str(corpus), "--threads", "1"]) == 0
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in capsys.readouterr().out.splitlines()]
    rows = [r for r in rows if len(r) == 7 and r[3].isdigit()]
    assert {"original", "demosaic bilinear", "demosaic mhc", "demosaic vng", "demosaic ea"} <= {r[0] for r in rows}
    # 128x128 synthetic images hold 4 crops: all of them, and groups of 4 and 2; bilinear demosaicing is always found
    bil = [r for r in rows if r[0] == "demosaic bilinear"]
    assert {r[2] for r in bil} == {"all (up to 16)", "4", "2"} and all(r[-1] == "100.0%" for r in bil)


def test_head_robustness_tables_both_heads_with_and_without_camera_copies(corpus, capsys):
    assert probes.main(["head-robustness", "--data", str(corpus), "--threads", "1"]) == 0
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in capsys.readouterr().out.splitlines()]
    rows = [r for r in rows if len(r) == 6 and r[0] in ("linear", "mlp")]
    assert {(r[0], r[1]) for r in rows} == {
        (k, f) for k in ("linear", "mlp") for f in ("originals + resized", "originals + resized + camera copies")
    }
    assert len(rows) == 4 * len(probes.camera_eval_ops())
    assert all(0 <= float(r[3]) <= 1 and r[4].endswith("%") for r in rows)


def test_jpeg_scores_and_jpeg_real_table_the_round_trips(tmp_path, capsys):
    from lida_exporters.spam_model import VERSION1

    root = tmp_path / "data"
    for k, g in enumerate(("gen-a", "gen-b")):
        for i in range(6):
            write_png(root / "generated" / g / f"{g}-{i}.png", g, 100 * k + i, size=256)
    for i in range(6):
        write_png(root / "real" / "r1" / f"real-{i}.png", "real", 700 + i, size=256)
    assert probes.main(["jpeg-scores", "--data", str(root), "--threads", "1"]) == 0
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in capsys.readouterr().out.splitlines()]
    rows = {(r[0], r[1]): r for r in rows if len(r) == 6 and r[2].isdigit()}
    assert rows[("JPEG q75 4:2:0", "generated")][-1] == "100.0%"  # a q75 round trip is always seen
    assert {("original", "r1"), ("original", "generated"), ("JPEG q98 4:2:0", "real")} <= set(rows)
    table = probes.jpeg_real(root, None, 1, cache=None, recipe=replace(VERSION1, T=1, colour=False, pca_dim=8, dim=4))
    fits = {ln.split("|")[1].strip() for ln in table.splitlines() if ln.startswith("| ") and "JPEG copies" in ln}
    assert fits == {"0 JPEG copies", "1 JPEG copies"}


def test_sharpen_real_tables_both_fits_with_the_version_2_head(corpus):
    """sharpen-real fits the bundled (version-2) recipe with 0 and 1 sharpened copies and scores every held-out
    version at thresholds calibrated with the noised real versions (``_copies_rows`` reads the noise floors)."""
    from lida_exporters.spam_model import SpamRecipe

    r = SpamRecipe(T=1, colour=False, pca_dim=8, dim=4, det_noise_copies=1, det_resize_copies=0)
    table = probes.sharpen_real(corpus, None, 1, cache=None, recipe=r)
    assert "detection head version 2" in table
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines() if ln.startswith("| ")][1:]
    versions = [op.name for op in probes.sharpen_eval_ops()]
    assert [(c[0], c[1]) for c in rows] == [(f"{k} sharpened copies", v) for k in (0, 1) for v in versions]
    for c in rows:  # AUC, real flagged, generated caught, threshold
        assert all(0 <= float(v.rstrip("%")) <= 100 for v in c[2:5]) and 0 <= float(c[5]) <= 1


def test_noise_head_options_are_checked(corpus, tmp_path):
    """``--head-l2`` belongs to noise-head and wants numbers; noise-head compares version-2 heads only."""
    from lida_exporters.spam_model import VERSION1

    with pytest.raises(SystemExit):
        probes.main(["ceiling", "--data", str(corpus), "--head-l2", "0.01"])
    with pytest.raises(SystemExit):
        probes.main(["noise-head", "--data", str(corpus), "--head-l2", "small"])
    with pytest.raises(ValueError, match="head_noise"):
        probes.noise_head(corpus, None, 1, None, recipe=VERSION1)
    with pytest.raises(SystemExit):  # real-set-out's head has one L2
        probes.main(["real-set-out", "--data", str(corpus), "--head-l2", "0.01,0.001"])
    with pytest.raises(SystemExit):  # the sd range runs low to high (lida-train spam's own --noise-sd type)
        probes.main(["real-set-out", "--data", str(corpus), "--noise-sd", "2,1"])
    with pytest.raises(SystemExit):
        probes.main(["ceiling", "--data", str(corpus), "--head-noise"])
