"""Metric functions of lida eval against hand-computed rankings (ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lida_plugin.evaluate import metrics as M


def test_rank_and_ap_without_ties():
    sims = [0.9, 0.8, 0.7, 0.6]
    gl = ["a", "b", "a", "b"]
    rel = M.ranked_relevance([sims, sims], gl, ["a", "b"])
    assert rel.tolist() == [[True, False, True, False], [False, True, False, True]]
    # a: relevant at ranks 1 and 3 -> (1/1 + 2/3) / 2; b: ranks 2 and 4 -> (1/2 + 2/4) / 2
    assert M.average_precision(rel[0]) == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision(rel[1]) == pytest.approx(0.5)
    r = M.retrieval_metrics([sims, sims], gl, ["a", "b"])
    assert r["rank1_micro"] == 0.5
    assert r["map_micro"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert r["top1"] == ["a", "a"]


def test_ties_are_broken_against_the_query():
    sims = [0.5, 0.5, 0.2]
    gl = ["a", "b", "a"]
    # query a: the tied b ranks first -> [b, a0, a2]: AP (1/2 + 2/3) / 2, Rank-1 0
    assert M.rank_gallery(sims, np.array(gl) == "a").tolist() == [1, 0, 2]
    # query b: the tied a ranks first -> [a0, b, a2]: AP 1/2, Rank-1 0
    assert M.rank_gallery(sims, np.array(gl) == "b").tolist() == [0, 1, 2]
    r = M.retrieval_metrics([sims, sims], gl, ["a", "b"])
    assert r["per_class"]["a"]["rank1"] == 0.0
    assert r["per_class"]["a"]["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["per_class"]["b"]["rank1"] == 0.0
    assert r["per_class"]["b"]["map"] == pytest.approx(0.5)
    assert r["top1"] == ["b", "a"]


def test_all_equal_similarities_never_score_by_luck():
    sims = np.zeros((3, 4))
    r = M.retrieval_metrics(sims, ["a", "a", "b", "c"], ["a", "b", "c"])
    assert r["rank1_micro"] == 0.0
    # a: relevant at ranks 3, 4 of 4 -> (1/3 + 2/4)/2; b, c: at rank 4 -> 1/4
    assert r["per_class"]["a"]["map"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert r["per_class"]["b"]["map"] == pytest.approx(0.25)


def test_equal_ties_within_one_class_keep_gallery_order():
    order = M.rank_gallery([0.3, 0.9, 0.9, 0.9], np.array([True, True, False, True]))
    assert order.tolist() == [2, 1, 3, 0]


def test_no_relevant_item_gives_zero_ap():
    assert M.average_precision(np.array([False, False])) == 0.0


def test_class_average_differs_from_micro():
    # three queries of a (all hits), one of b (a miss)
    sims = [[0.9, 0.1]] * 3 + [[0.9, 0.1]]
    r = M.retrieval_metrics(sims, ["a", "b"], ["a", "a", "a", "b"])
    assert r["rank1_micro"] == 0.75
    assert r["rank1_class_avg"] == 0.5
    assert r["per_class"]["b"]["map"] == pytest.approx(0.5)


def test_empty_queries():
    r = M.retrieval_metrics(np.zeros((0, 2)), ["a", "b"], [])
    assert r["n_queries"] == 0 and math.isnan(r["rank1_micro"])


def test_roc_auc_hand_computed_and_ties():
    assert M.roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert M.roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    # one tie pair among 2x2: pairs (0.7>0.2), (0.7>0.5), (0.5=0.5 -> 1/2), (0.5>0.2) -> 3.5/4
    assert M.roc_auc([0.7, 0.5, 0.5, 0.2], [True, True, False, False]) == pytest.approx(3.5 / 4)
    assert math.isnan(M.roc_auc([0.1, 0.2], [True, True]))


def test_threshold_metrics():
    t = M.threshold_metrics([0.9, 0.6, 0.4, 0.1], [True, True, True, False], 0.5)
    assert t["tpr"] == pytest.approx(2 / 3)
    assert t["fpr"] == 0.0
    assert t["accuracy"] == 0.75
    assert t["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)


def test_cross_calibrated_detection_is_hand_computable():
    from lida_plugin.detect import calibrate_threshold

    # ten real scores 0.0..0.9, alternating folds {0, .2, .4, .6, .8} and {.1, .3, .5, .7, .9}
    real = np.arange(10) / 10
    gen = np.array([0.85, 0.95, 0.5])
    scores = np.concatenate([real, gen])
    y = np.array([False] * 10 + [True] * 3)
    # at fpr 0.2 of five scores: at most one may reach the threshold -> the top one of each fold
    assert calibrate_threshold(real[1::2], 0.2) == pytest.approx(0.9)
    assert calibrate_threshold(real[0::2], 0.2) == pytest.approx(0.8)
    x = M.cross_calibrated(scores, y, 0.2)
    assert x["thresholds"] == pytest.approx([0.9, 0.8])
    # fold A (>= 0.9): none of {0..0.8}; fold B (>= 0.8): 0.9 -> 1 false positive of 10
    assert x["fpr"] == pytest.approx(0.1)
    # generated at 0.9: 0.95 -> 1/3; at 0.8: 0.85, 0.95 -> 2/3
    assert x["tpr"] == pytest.approx(0.5)
    assert math.isnan(M.cross_calibrated(np.array([0.1, 0.9]), np.array([False, True]), 0.05)["fpr"])
    with pytest.raises(ValueError, match="at least one"):
        calibrate_threshold(np.array([]), 0.05)


def test_confident_calibration_by_hand():
    from lida_plugin.detect import calibrate_threshold, fpr_upper_bound

    # k = 0 has a closed form: 1 - (1 - c)^(1/n)
    assert fpr_upper_bound(0, 60, 0.9) == pytest.approx(1 - 0.1 ** (1 / 60), abs=1e-8)
    # k = 1 of n = 10 at c = 0.5: P(X <= 1) = (1-u)^10 + 10 u (1-u)^9 = 0.5 at u ~ 0.16226
    assert fpr_upper_bound(1, 10, 0.5) == pytest.approx(0.16226, abs=1e-4)
    assert fpr_upper_bound(3, 3, 0.9) == 1.0
    real = np.arange(120) / 120
    # n = 120, fpr 5%, c = 0.9: bounds 1.9% (k=0), 3.2% (1), 4.4% (2), 5.5% (3) -> two may reach it
    assert fpr_upper_bound(2, 120, 0.9) <= 0.05 < fpr_upper_bound(3, 120, 0.9)
    t = calibrate_threshold(real, 0.05, 0.9)
    assert t == pytest.approx(118 / 120) and (real >= t).sum() == 2
    assert (real >= calibrate_threshold(real, 0.05)).sum() == 6  # the point estimate lets 5% through
    # n = 60: only k = 0 keeps the bound (3.8%) under 5%: just above every real score
    t60 = calibrate_threshold(real[:60], 0.05, 0.9)
    assert t60 > real[59] and t60 == pytest.approx(real[59])
    with pytest.raises(ValueError, match="confidence"):
        calibrate_threshold(real, 0.05, 1.5)
    # lida eval cross-calibrates with the model's rule
    scores = np.concatenate([real, np.ones(5)])
    y = np.r_[np.zeros(120, bool), np.ones(5, bool)]
    assert M.cross_calibrated(scores, y, 0.05, 0.9)["fpr"] < M.cross_calibrated(scores, y, 0.05)["fpr"]


def test_confusion_and_family():
    cm = M.confusion_matrix(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    assert cm.tolist() == [[1, 1], [0, 1]]
    fam = {"sd-1.4": "sd1", "sd-1.5": "sd1", "flux": "flux"}
    assert M.family_accuracy(["sd-1.4", "sd-1.5", "flux"], ["sd-1.5", "sd-1.5", "sd-1.4"], fam) == pytest.approx(2 / 3)


def test_summarize():
    s = M.summarize([0.5, 1.0, float("nan")])
    assert s["mean"] == 0.75 and s["n"] == 2
    assert s["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert M.summarize([0.3])["std"] == 0.0
    assert M.summarize([])["n"] == 0


def _lv(r1: float, inconclusive: float, confident: float) -> dict:
    c = {
        "rank1_class_avg": {"mean": r1},
        "confident_attribution_rate": {"mean": confident},
        "confident_wrong_attribution_rate": {"mean": 0.0},
    }
    return {"inconclusive_rate": inconclusive, "conditions": {"lida": c}}


def test_gate_check_flags_collapsed_levels_let_through():
    from types import SimpleNamespace

    from lida_plugin.evaluate.run import _gate_check

    out = {"classes": 10, "levels": {
        "none": _lv(0.8, 0.0, 0.7),
        "jpeg-q95": _lv(0.7, 1.0, 0.0),  # fine accuracy, but the gate fires: fired without collapse
        "resize-0.5": _lv(0.15, 0.0, 0.3),  # collapsed (< 0.4), gate silent, confident answers: let through
        "crop": _lv(0.1, 1.0, 0.0),  # collapsed and gated: fine
    }}  # fmt: skip
    _gate_check(out, [SimpleNamespace(name="lida", info=object())])
    g = out["gate"]["lida"]
    assert g["collapsed_let_through"] == ["resize-0.5"]
    assert g["fired_without_collapse"] == ["jpeg-q95"]
    assert [r["collapsed"] for r in g["levels"]] == [False, False, True, True]


def test_gate_check_judges_a_family_named_alone_by_family_accuracy():
    """Where generator Rank-1 collapsed but family accuracy did not, a family named alone is not let
    through; a generator named there is, and so is a family named where family accuracy collapsed."""
    from types import SimpleNamespace

    from lida_plugin.evaluate.run import _gate_check

    def lv(r1, fam_acc, confident, family_alone):
        c = _lv(r1, 0.0, confident)
        c["conditions"]["lida"] |= {
            "family_accuracy": {"mean": fam_acc},
            "confident_family_rate": {"mean": family_alone},
        }
        return c

    out = {"classes": 20, "families": 10, "levels": {
        "none": lv(0.4, 0.8, 0.35, 0.25),
        "resize-0.5": lv(0.12, 0.6, 0.03, 0.03),  # Rank-1 collapsed, families hold: families alone are fine
        "resize-0.4": lv(0.10, 0.6, 0.05, 0.03),  # ... but 2% of generators named: let through
        "resize-0.3": lv(0.05, 0.15, 0.02, 0.02),  # family accuracy collapsed (< 0.2 = 2 x chance): let through
    }}  # fmt: skip
    _gate_check(out, [SimpleNamespace(name="lida", info=object())])
    g = out["gate"]["lida"]
    assert g["collapsed_let_through"] == ["resize-0.4", "resize-0.3"]
    assert [r["family_collapsed"] for r in g["levels"]] == [False, False, False, True]


def test_targets_need_five_seeds_and_an_rgb_baseline():
    from lida_plugin.evaluate.run import targets

    def cond(r1_1, named_1, r1_5=None):
        open_set = {"class_avg": {"unknown": 0.6, "family-named": 0.15, "wrong-family": 0.2}}
        ret = {"1": {"summary": {"rank1_class_avg": {"mean": r1_1}, "rank1_by_scope": {"named": {"mean": named_1}}},
                     "open_set_logo": open_set}}  # fmt: skip
        if r1_5 is not None:
            ret["5"] = {"summary": {"rank1_class_avg": {"mean": r1_5}}}
        return {"retrieval": ret}

    det = {"auc": 0.99, "cross_calibrated": {"fpr": 0.06, "tpr": 0.95}}
    lida = {**cond(0.65, 0.70, 0.74), "detection": det}
    res = {"meta": {"shots": [1, 5], "seeds": 5}, "conditions": {"lida": lida, "rgb-baseline": cond(0.3, 0.3)}}
    t = {x["target"].removeprefix("lida: "): x["met"] for x in targets(res)}
    assert t["1-shot Rank-1 >= 60%, all classes"] is True
    assert t["1-shot Rank-1 >= 75%, named generators"] is False
    assert t["5-shot Rank-1 >= 75%, all classes"] is False
    assert t["1-shot Rank-1 on named generators >= 2x the RGB baseline"] is True  # 0.70 >= 2 x 0.30
    assert t["detection AUC >= 0.98"] is True and t["cross-calibrated TPR >= 90% at that FPR"] is True
    assert t["cross-calibrated FPR <= 5% on real photos"] is False  # 6% is over the bound
    # unknown (60%) or its own family alone (15%): not another name; a wrong family (20%) does not count
    assert t["open set: a left-out generator is `unknown` or its own family, not another name (1-shot) >= 70%"]
    res["meta"]["seeds"] = 3
    t = {x["target"].removeprefix("lida: "): x["met"] for x in targets(res)}
    assert t["1-shot Rank-1 >= 60%, all classes"] is None and t["detection AUC >= 0.98"] is True
    del res["conditions"]["rgb-baseline"]
    t = {x["target"].removeprefix("lida: "): x for x in targets(res)}
    assert t["1-shot Rank-1 on named generators >= 2x the RGB baseline"]["met"] is None
