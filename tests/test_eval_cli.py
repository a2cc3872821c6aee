"""A tiny end-to-end ``lida eval`` on synthetic images with the tiny test encoder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import write_png

from lida_plugin.cli import main


@pytest.fixture
def eval_data(tmp_path):
    root = tmp_path / "data"
    for kind in ("gen-a", "gen-b", "gen-c"):
        for i in range(4):
            write_png(root / "generated" / kind / f"{kind}-{i}.png", kind, 200 + i, size=96)
    for s in ("set1", "set2"):
        for i in range(3):
            write_png(root / "real" / s / f"{s}-{i}.png", "real", 300 + 10 * len(s) + i, size=96)
    (root / "manifest.tsv").write_text(
        "path\tkind\tgenerator\tfamily\n"
        + "".join(
            f"generated/{k}/{k}-0.png\tgenerated\t{k}\t{'ab' if k != 'gen-c' else 'c'}\n"
            for k in ("gen-a", "gen-b", "gen-c")
        )
    )
    return root


def test_lida_eval_end_to_end(eval_data, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    report = tmp_path / "docs" / "RESULTS.md"
    rc = main(["eval", str(eval_data), "--shots", "1,2", "--seeds", "2", "--model", str(tiny_model), "--threads", "1",
               "--robust-per-class", "1", "--out", str(out), "--report", str(report)])  # fmt: skip
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["conditions"]) == {"lida", "raw-fingerprint-nn"}
    lida = res["conditions"]["lida"]
    for k in ("1", "2"):
        r = lida["retrieval"][k]
        assert r["summary"]["rank1_class_avg"]["n"] == 2
        assert r["classes"] == ["gen-a", "gen-b", "gen-c", "real"]
        assert 0.0 <= r["summary"]["map_class_avg"]["mean"] <= 1.0
        assert set(r["open_set_logo"]["per_class"]) == {"gen-a", "gen-b", "gen-c"}
        assert sum(r["pipeline_closed_set"]["class_avg"].values()) == pytest.approx(1.0)
    # the tiny encoder separates the synthetic fingerprints perfectly
    assert lida["retrieval"]["1"]["summary"]["rank1_class_avg"]["mean"] == 1.0
    assert lida["detection"]["auc"] == 1.0
    assert res["meta"]["families"]["gen-a"] == "ab"
    levels = res["robustness"]["levels"]
    assert levels["jpeg-q90"]["inconclusive_rate"] == 1.0  # the runtime's gate reads the format
    assert levels["resize-0.5"]["inconclusive_rate"] == 0.0  # a resized PNG looks like an original
    plots = {p.name for p in (out / "plots").iterdir()} if (out / "plots").is_dir() else set()
    if importlib.util.find_spec("matplotlib"):  # the eval extra
        assert {"rank1_vs_shots.png", "confusion_k1.png", "pca_map.png", "rank1_vs_jpeg.png"} <= plots
    else:  # without it the evaluation still runs, only the plots are left out
        assert plots == set()
    text = report.read_text()
    assert "lida eval" in text and "## Targets" in text and "(results/confusion_k1.png)" in text
    assert (report.parent / "results" / "results.json").is_file()
    assert "lida\t100.0" in capsys.readouterr().out


def test_lida_eval_split_all_json_no_model(eval_data, capsys):
    rc = main(["eval", str(eval_data), "--shots", "3", "--seeds", "1", "--split", "all", "--no-model", "--json",
               "--no-robustness"])  # fmt: skip
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    r = res["conditions"]["raw-fingerprint-nn"]["retrieval"]["3"]
    assert r["classes"] == ["gen-a", "gen-b", "gen-c", "real"]
    assert r["per_class"]["gen-a"]["queries_per_seed"] == 1  # 4 images, 3 in the gallery


def test_lida_eval_bad_root(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope"), "--no-model"]) == 3
    assert "does not exist" in capsys.readouterr().err


def test_training_conditions_need_torch(monkeypatch):
    from lida_exporters import eval_conditions

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(eval_conditions.TrainExtraMissing, match="install the train extra"):
        eval_conditions._exporters()


def test_training_conditions_come_from_the_plugin_manager(eval_data, capsys, monkeypatch):
    """Without the training plugin (LIDA_LOAD_PLUGINS= keeps only lida's own), --train-baseline is a setup error."""
    monkeypatch.setenv("LIDA_LOAD_PLUGINS", "")
    assert main(["eval", str(eval_data), "--train-baseline", "rgb", "--no-model"]) == 3
    assert "lida_eval_train_baseline" in capsys.readouterr().err


def test_runtime_never_imports_the_training_package():
    code = ("import sys, lida_plugin.cli, lida_plugin.evaluate.cli, lida_plugin.evaluate.run,"
            " lida_plugin.evaluate.report, lida_plugin.watch, lida_plugin.commands;"
            " print(sorted(m for m in sys.modules if m.split('.')[0] in ('exporters', 'lida_exporters')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_evaluation_does_not_import_torch():
    code = ("import sys, lida_plugin.cli, lida_plugin.evaluate.cli, lida_plugin.evaluate.run, "
            "lida_plugin.evaluate.report, lida_exporters.eval_conditions; print('torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_adapt_condition_trains_on_the_gallery_only(eval_data, tiny_model, tmp_path):
    pytest.importorskip("torch")
    from lida_exporters.train import Recipe, pretrain
    from lida_plugin.evaluate.run import EvalConfig, evaluate

    r = Recipe(arch="lida-resnet-tiny", dim=16, crop=32, crop_count=4, pretrain="none")
    init = pretrain(r, [], tmp_path / "run", progress=False)  # random weights, no data needed
    cfg = EvalConfig(str(eval_data), shots=(1,), seeds=1, model=str(tiny_model), raw_baseline=False, adapt=True,
                     adapt_init=str(init), adapt_steps=2, robustness=False, open_set=False, threads=1)  # fmt: skip
    from lida_plugin.manager import new_plugin_manager

    res = evaluate(cfg, new_plugin_manager())  # the training plugin (entry point lida-train) runs --adapt
    ad = res["conditions"]["lida-adapted"]
    assert ad["adapt_steps"] == 2 and ad["seeds"] == 1
    s = ad["retrieval"]["1"]["summary"]
    assert s["rank1_class_avg"]["n"] == 1 and 0.0 <= s["detection_auc"]["mean"] <= 1.0
