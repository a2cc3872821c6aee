"""``lida eval``: the lossy-input detector (:mod:`lida_plugin.lossy`) measured per band.

Each held-out image is re-encoded in memory per degradation of :data:`lida_plugin.lossy.BANDS`
(JPEG q95/q85/q75 with 4:2:0 and 4:4:4 chroma, resizing to 0.75x and 0.5x, 0.5x then q85),
decoded by the runtime's decoder and scored by the shipped detector. Per band: the AUC
(generated vs real), the FPR/TPR at the shipped threshold, and the cross-calibrated FPR/TPR
(:func:`.metrics.cross_calibrated`: thresholds calibrated on one half of the real photos,
applied to the other). The detector is trained on the *train* half of this corpus, so its
queries are always the held-out half, whatever ``--split`` says. The file's own
leave-family-out AUCs (measured at training time) are quoted next to them: they, not the
held-out AUCs, estimate how it does on generators it never saw.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..decode import decode_file, read_bytes
from ..errors import InputError, ModelError
from ..lossy import (
    BANDS,
    VERDICT_AUC,
    VERDICT_BAND,
    VERDICT_TPR,
    VERDICT_UNSEEN_REAL_FPR,
    LossyDetector,
    load_detector,
    verdict_misses,
)
from . import metrics as M
from .corpus import Entry

log = logging.getLogger(__name__)


def lossy_detection(entries: list[Entry], detector: LossyDetector | None = None, progress: bool = False) -> dict:
    """Per band: AUC, FPR/TPR at the threshold and cross-calibrated, on the held-out half of ``entries``."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    try:
        det = detector if detector is not None else load_detector()
    except ModelError as exc:
        return {"error": str(exc)}
    held = [e for e in entries if e.split == "heldout"]
    scores: dict[str, list[float]] = {b: [] for b in BANDS}
    labels: dict[str, list[bool]] = {b: [] for b in BANDS}
    named: dict[str, list[bool]] = {b: [] for b in BANDS}
    skipped = 0
    for e in tqdm(held, desc="lossy detector", unit="img", disable=not progress, mininterval=2.0):
        try:
            dec = decode_file(e.path)
        except InputError:
            skipped += 1
            continue
        if not dec.reliable:  # the bands start from the original pixels
            skipped += 1
            continue
        for band, degs in BANDS.items():
            for d in degs:
                scores[band].append(det.score(d.apply(dec.pixels, e.relpath).pixels))
                labels[band].append(e.kind == "generated")
                named[band].append(not e.source.startswith("ldm-sr"))
    bands = {}
    for band in BANDS:
        s, y, nm = np.asarray(scores[band]), np.asarray(labels[band], bool), np.asarray(named[band], bool)
        at = M.threshold_metrics(s, y, det.threshold)
        trained = det.auc.get(band, {})
        bands[band] = {
            "auc": M.roc_auc(s, y),
            "auc_named": M.roc_auc(s[nm], y[nm]) if len(s) else float("nan"),
            "fpr_at_threshold": at["fpr"],
            "tpr_at_threshold": at["tpr"],
            "cross_calibrated": M.cross_calibrated(s, y, det.fpr),
            "leave_family_out_auc": trained.get("leave_family_out"),
            "leave_family_out_min": trained.get("leave_family_out_min"),
            "n_generated": int(y.sum()),
            "n_real": int((~y).sum()),
            "degradations": [d.describe() for d in BANDS[band]],
        }
    return {
        "detector": det.path,
        "feature": det.feature,
        "recipe_hash": det.raw.get("recipe_hash"),
        "threshold": det.threshold,
        "fpr": det.fpr,
        "calibrated": det.calibrated,
        "threshold_from": det.raw.get("threshold_from", "heldout"),
        "verdict_misses": verdict_misses(det.raw),
        "leave_real_set_out": det.raw.get("leave_real_set_out"),
        "skipped": skipped,
        "bands": bands,
        "seconds": round(time.perf_counter() - t0, 1),
    }


#: the four ways the two classes can reach the runtime: (real photos as, generated images as)
ARRIVALS = (("png", "png"), ("jpeg", "jpeg"), ("jpeg", "png"), ("png", "jpeg"))


def heldout_capped(entries: list[Entry], per_ldm_sr: int = 5) -> list[Entry]:
    """The held-out half with at most ``per_ldm_sr`` faces per ldm-sr checkpoint, so the named generators are
    not swamped by one face set (the runtime measurements: :func:`forced_runtime`, benchmarks/resized_photos.py)."""
    seen: dict[str, int] = {}
    out = []
    for e in entries:
        if e.split == "heldout" and (not e.source.startswith("ldm-sr") or seen.get(e.source, 0) < per_ldm_sr):
            seen[e.source] = seen.get(e.source, 0) + 1
            out.append(e)
    return out


def forced_runtime(entries: list[Entry], quality: int = 85, model: str | None = None, progress: bool = False) -> dict:
    """What ``lida attribute --force`` records for each held-out image sent as its lossless file and as a
    JPEG at ``quality`` (4:2:0, Pillow), through the whole runtime (bundled or ``model``'s default store):
    the AUC of ``detection.ai_score`` for each of :data:`ARRIVALS`, and the verdict and ``decided_by``
    rates per class and format, on :func:`heldout_capped`."""
    from tqdm import tqdm

    from ..attribute import Attributor
    from ..encoder import Encoder
    from ..lossy import jpeg_bytes
    from ..store import open_stack

    t0 = time.perf_counter()
    encoder = Encoder(model)
    att = Attributor(encoder, open_stack(encoder, None, use_default=True), force=True)
    held = heldout_capped(entries)
    recs: dict[tuple[str, str], list[dict]] = {}
    for e in tqdm(held, desc="forced runtime", unit="img", disable=not progress, mininterval=2.0):
        png = read_bytes(str(e.path))
        first = att.prepare(e.relpath, png)
        if not getattr(first, "ok", True) or not first.decoded.reliable:
            continue  # an unreliable original has no lossless arrival to compare with
        px = decode_file(e.path).pixels
        jpg = att.prepare(e.relpath + f"[q{quality}]", jpeg_bytes(px, quality, 2))
        for fmt, r in zip(("png", "jpeg"), att.finish([first, jpg]), strict=True):
            if r.ok:
                recs.setdefault((e.kind, fmt), []).append(r.to_dict())
    out: dict = {"quality": quality, "model_id": att.model_id, "store_id": att.store_id, "arrivals": {}, "rates": {}}
    for real_fmt, gen_fmt in ARRIVALS:
        r, g = recs.get(("real", real_fmt), []), recs.get(("generated", gen_fmt), [])
        s = np.asarray([x["detection"]["ai_score"] for x in r + g])
        fp = np.asarray([x["evidence"][0]["score"] for x in r + g])  # the fingerprint's own (ai_score until 12-02)
        y = np.asarray([False] * len(r) + [True] * len(g))
        out["arrivals"][f"real {real_fmt}, generated {gen_fmt}"] = {
            "auc": M.roc_auc(s, y),
            "auc_fingerprint": M.roc_auc(fp, y),
            "n_real": len(r),
            "n_generated": len(g),
        }
    for (kind, fmt), rs in sorted(recs.items()):
        n = len(rs)
        out["rates"][f"{kind} {fmt}"] = {
            "n": n,
            "ai-generated": sum(x["verdict"] == "ai-generated" for x in rs) / n,
            "real": sum(x["verdict"] == "real" for x in rs) / n,
            "fingerprint_ai": sum(x["evidence"][0]["claim"] == "ai-generated" for x in rs) / n,
            "decided_by": sorted({x["decided_by"] for x in rs if x["decided_by"]}),
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def forced_markdown(res: dict) -> list[str]:
    """The forced-runtime table (:func:`forced_runtime`)."""
    L = [f"### `--force` through the runtime: lossless files and JPEG q{res['quality']} (model {res['model_id']})", "",
         "| real photos arrive as | generated images arrive as | AUC of `detection.ai_score` | AUC of the fingerprint's"
         " score | real / generated |", "|---|---|---|---|---|"]  # fmt: skip
    for k, a in res["arrivals"].items():
        rf, gf = (p.split()[1].rstrip(",") for p in k.split(", "))
        L.append(f"| {rf} | {gf} | {_f(a['auc'])} | {_f(a['auc_fingerprint'])} | {a['n_real']} / {a['n_generated']} |")
    L += ["", "| class, format | images | `ai-generated` | `real` | decided by | the fingerprint's forced verdict "
          "`ai-generated` |", "|---|---|---|---|---|---|"]  # fmt: skip
    for k, r in res["rates"].items():
        L.append(f"| {k} | {r['n']} | {r['ai-generated']:.1%} | {r['real']:.1%} | {', '.join(r['decided_by'])} |"
                 f" {r['fingerprint_ai']:.1%} |")  # fmt: skip
    return L + [""]


def _f(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def markdown(res: dict | None) -> list[str]:
    """The report section (empty when the run did not measure it)."""
    if not res:
        return []
    L = ["## Lossy-input detector (held-out half, per band)", ""]
    if "error" in res:
        return L + [f"Not measured: {res['error']}", ""]
    grade = "verdict-grade (`calibrated: true`)" if res["calibrated"] else "a hint only (`calibrated: false`)"
    where = {"real-set-out": "each real set scored by a detector fitted without it (cross-fitted)"}.get(
        res.get("threshold_from"), "held-out real photos"
    )
    misses = res.get("verdict_misses") or []
    L += [
        f"Detector `{res['feature']}` (recipe {res['recipe_hash']}), threshold {res['threshold']:.4f} calibrated at"
        f" {res['fpr']:.0%} FPR on {where}; it ships as {grade}"
        + (f": {'; '.join(misses)}." if misses and not res["calibrated"] else "."),
        f"(Verdict grade needs held-out and leave-family-out AUC >= {VERDICT_AUC} and TPR >= {VERDICT_TPR} at"
        f" {VERDICT_BAND}, and at most {VERDICT_UNSEEN_REAL_FPR:g} x its FPR on real sets it never saw.)",
        "",
        "| band | AUC | AUC (without ldm-sr faces) | leave-family-out AUC (mean / min, from training) |"
        " FPR / TPR at threshold | cross-calibrated FPR / TPR | generated / real |",
        "|---|---|---|---|---|---|---|",
    ]
    for band, b in res["bands"].items():
        cc = b["cross_calibrated"]
        L.append(
            f"| {band} | {_f(b['auc'])} | {_f(b['auc_named'])} | {_f(b['leave_family_out_auc'])} /"
            f" {_f(b['leave_family_out_min'])} | {_f(b['fpr_at_threshold'], 2)} / {_f(b['tpr_at_threshold'], 2)} |"
            f" {_f(cc['fpr'], 2)} / {_f(cc['tpr'], 2)} | {b['n_generated']} / {b['n_real']} |"
        )
    lro = res.get("leave_real_set_out")
    if lro:  # measured at training time: the detector that never saw the set, its threshold set without it
        per = ", ".join(f"{k} {v['fpr']:.0%} of {v['n']}" for k, v in lro["per_set"].items())
        L += ["", f"Real photos of a set it never saw (leave-real-set-out at {lro['band']}, from training): flagged"
              f" {lro['pooled_fpr']:.1%} pooled ({per}); held-out generated caught at those thresholds"
              f" {lro['mean_tpr']:.1%}; AUC of an unseen set against them {lro['mean_auc']:.3f}."]  # fmt: skip
    L.append("")
    return L


def _json_safe(o):
    """NaN (an AUC over a band with one class only) becomes null; numpy scalars become Python numbers."""
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    return o


def main(argv: list[str] | None = None) -> int:
    """``python -m lida_plugin.evaluate.lossy DATA_ROOT``: this section of ``lida eval`` on its own."""
    import argparse
    import json
    import sys

    from .corpus import CorpusError, load_corpus

    p = argparse.ArgumentParser(prog="python -m lida_plugin.evaluate.lossy", description=main.__doc__)
    p.add_argument("data_root", metavar="DATA_ROOT")
    p.add_argument("--detector", help="parameter file (default: the bundled lida_plugin/data/lossy-detector.json)")
    p.add_argument("--json-out", help="write the measurements as JSON here")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--forced-runtime", type=int, metavar="QUALITY", default=None,
                   help="also run the whole runtime with --force on each held-out image as its file and as a "
                   "JPEG at QUALITY, and report the AUC of detection.ai_score per way the classes arrive")  # fmt: skip
    p.add_argument("--model", help="with --forced-runtime: encoder ONNX file (default: the bundled one)")
    args = p.parse_args(argv)
    try:
        entries = load_corpus(args.data_root)
        det = load_detector(args.detector)
    except (CorpusError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = lossy_detection(entries, det, args.progress)
    print("\n".join(markdown(res)))
    if args.forced_runtime is not None:
        res["forced_runtime"] = forced_runtime(entries, args.forced_runtime, args.model, args.progress)
        print("\n".join(forced_markdown(res["forced_runtime"])))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(_json_safe(res), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
