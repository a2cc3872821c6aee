"""``lida eval``: the paper's protocol on a data folder, with baselines, a report and plots.

A built-in plugin (:data:`lida_plugin.manager.DEFAULT_PLUGINS`): its ``lida_register_commands`` adds ``lida eval``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

from .. import hookimpl
from ..cli_options import threads_arg
from .corpus import BASELINES, NO_TRAINER

log = logging.getLogger(__name__)


#: the condition name of each --train-baseline kind in the report
CONDITION_NAMES = {"rgb": "rgb-matched", "scaled-matched": "scaled-matched", "resized": "resized-matched"}


def _ints(s: str) -> tuple[int, ...]:
    try:
        v = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None
    if not v or any(x < 1 for x in v):
        raise argparse.ArgumentTypeError("shots must be positive integers")
    return tuple(sorted(set(v)))


def _pair(s: str) -> tuple[str, str]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected NAME=MODEL.onnx, got {s!r}")
    name, path = s.split("=", 1)
    return name.strip(), path.strip()


@hookimpl
def lida_register_commands(subparsers: argparse._SubParsersAction, pm) -> None:
    """``lida eval``. Long because it is one flat list of argparse options, each with its help text."""
    sub = subparsers
    p = sub.add_parser(
        "eval",
        help="evaluate attribution the paper's way (Rank-1/mAP at k shots, detection, open set, robustness)",
        description="Evaluate on a data folder laid out as <root>/generated/<generator>/*.png and"
        " <root>/real/<set>/*.png (e.g. ../shared/data). See docs/evaluation.md.",
    )
    p.add_argument("data_root", metavar="DATA_ROOT")
    p.add_argument("--shots", type=_ints, default=(1, 5, 10), help="gallery images per class (default 1,5,10)")
    p.add_argument("--seeds", type=int, default=5, help="episodes (gallery draws) per k (default 5)")
    p.add_argument(
        "--split",
        choices=("heldout", "all"),
        default="heldout",
        help="heldout (default): gallery from the train half, queries = the held-out half (any model"
        " trained on this corpus); all: gallery and queries from all images (models that never saw it)",
    )
    p.add_argument("--model", help="encoder ONNX (default: $LIDA_MODEL, else the bundled model)")
    p.add_argument("--no-model", action="store_true", help="no encoder: baselines only")
    p.add_argument("--no-raw", action="store_true", help="skip the raw-fingerprint nearest-neighbour baseline")
    p.add_argument(
        "--compare",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=MODEL.onnx",
        help="also evaluate this contract model as condition NAME (repeatable), e.g. rgb=rgb.onnx",
    )
    p.add_argument(
        "--train-baseline",
        action="append",
        default=[],
        choices=BASELINES,
        help="train (train split only) and evaluate a baseline encoder: rgb, scaled-matched (the"
        " fingerprint model under the same budget), resized (scaled-matched on images resized to 256x256)"
        " or authors (ResNet-50 w/o max-pool on the image resized to 256x256); needs the train extra;"
        " models are kept in runs/eval-<kind>/",
    )
    p.add_argument(
        "--train-steps",
        type=int,
        default=600,
        help="pre-training budget per baseline, in steps of the default batch (32 crops of 64x64); a baseline"
        " with larger inputs (authors) gets the same training pixels in fewer steps (default 600)",
    )
    p.add_argument(
        "--train-adapt-steps",
        type=int,
        default=200,
        help="adaptation budget per baseline, counted like --train-steps (default 200)",
    )
    p.add_argument(
        "--adapt",
        action="store_true",
        help="add registration + few-shot adaptation on each episode's gallery (needs the train extra)",
    )
    p.add_argument("--adapt-init", help="pre-trained checkpoint to adapt from (default runs/default/pretrain.pt)")
    p.add_argument("--adapt-steps", type=int, default=150, help="adaptation steps per episode (default 150)")
    p.add_argument("--adapt-seeds", type=int, help="seeds for the adapted condition (default: --seeds)")
    p.add_argument("--adapt-shots", type=_ints, help="shots for the adapted condition (default: --shots)")
    p.add_argument("--no-robustness", action="store_true", help="skip the JPEG/resize/crop sweep")
    p.add_argument("--robust-per-class", type=int, default=10, help="queries per class in the sweep (default 10)")
    p.add_argument("--no-open-set", action="store_true", help="skip leave-one-generator-out")
    p.add_argument(
        "--threads",
        type=threads_arg,
        default=os.environ.get("LIDA_THREADS") or None,
        help="CPU threads (default: $LIDA_THREADS, else all cores)",
    )
    p.add_argument("--out", help="folder for results.json, report.md and plots/")
    p.add_argument("--report", help="Markdown report to write (plots go to results/ next to it), e.g. docs/RESULTS.md")
    p.add_argument("--json", action="store_true", help="print the full JSON result to stdout")
    p.add_argument("--progress", action="store_true", help="progress bars on stderr")
    p.set_defaults(func=cmd_eval)


def _command(args: argparse.Namespace) -> str:
    parts = ["lida", "eval", args.data_root, "--shots", ",".join(map(str, args.shots)), "--seeds", str(args.seeds)]
    if args.split != "heldout":
        parts += ["--split", args.split]
    if args.model:
        parts += ["--model", args.model]
    for flag in ("no_model", "no_raw", "adapt", "no_robustness", "no_open_set"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    if args.adapt:
        parts += ["--adapt-steps", str(args.adapt_steps)]
        if args.adapt_seeds is not None:
            parts += ["--adapt-seeds", str(args.adapt_seeds)]
        if args.adapt_shots:
            parts += ["--adapt-shots", ",".join(map(str, args.adapt_shots))]
    for name, path in args.compare:
        parts += ["--compare", f"{name}={path}"]
    for kind in args.train_baseline:
        parts += ["--train-baseline", kind]
    if args.train_baseline:
        parts += ["--train-steps", str(args.train_steps), "--train-adapt-steps", str(args.train_adapt_steps)]
    if args.robust_per_class != 10:
        parts += ["--robust-per-class", str(args.robust_per_class)]
    if args.report:
        parts += ["--report", args.report]
    if args.out:
        parts += ["--out", args.out]
    return shlex.join(parts)


def _notes(result: dict) -> list[str]:
    notes = []
    main = result["conditions"].get("lida")
    tr = (main or {}).get("training") or {}
    if tr.get("adapt_classes"):
        notes.append(
            f"The shipped encoder was adapted on the train half of {len(tr['adapt_classes'])} generated classes of"
            " this corpus, so 'registration only' here registers generators the encoder was trained to separate"
            " (their held-out images were never seen). The leave-one-generator-out rows remove a generator from"
            " the store only, not from the encoder's training, so they are an optimistic estimate for a truly new"
            " generator; `--adapt` (adaptation from the pre-trained checkpoint on each episode's gallery only) is"
            " the paper's few-shot setting."
        )
    if any("rgb" in c for c in result["conditions"]):
        notes.append(
            "Content confound: several named-generator classes here are one prompt rendered at several weight"
            " quantisations (flux-1, z-image, sd-1.5-ggml, the Core ML sd-1.4/1.5 pairs), so an RGB encoder can"
            " retrieve them by picture content, not by generator trace. The seven ldm-sr classes are the same 100"
            " faces through seven checkpoints: content-controlled, the honest test of fingerprint vs RGB."
        )
    notes.append(
        "Ties in the ranking are broken against the query (a same-similarity item of another class ranks first),"
        " so a degenerate encoder cannot score by luck; classes with too few images for a k are listed as skipped"
        " and are neither registered nor queried at that k, so averages at different k cover different classes."
    )
    return notes


def train_baseline(pm, kind: str, args: argparse.Namespace) -> str:
    """The ONNX path of baseline ``kind``, trained by whichever plugin implements ``lida_eval_train_baseline``."""
    from .corpus import ConditionUnavailable

    path = pm.hook.lida_eval_train_baseline(
        kind=kind, data_root=args.data_root, pretrain_steps=args.train_steps, adapt_steps=args.train_adapt_steps,
        threads=args.threads, progress=args.progress,
    )  # fmt: skip
    if path is None:
        raise ConditionUnavailable(f"no plugin trains baselines (lida_eval_train_baseline): {NO_TRAINER}")
    return str(path)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..errors import LidaError
    from .corpus import ConditionUnavailable, CorpusError
    from .run import EvalConfig, evaluate

    if args.seeds < 1:
        print("lida eval: error: --seeds must be >= 1", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    compare = dict(args.compare)
    try:
        for kind in args.train_baseline:
            budget = f"{args.train_steps} + {args.train_adapt_steps} default-batch steps of pixels"
            print(f"baseline {kind}: training ({budget}) unless runs/ has one trained so ...", file=sys.stderr)
            name = CONDITION_NAMES.get(kind, f"{kind}-baseline")
            compare[name] = train_baseline(args.pm, kind, args)
        cfg = EvalConfig(
            data_root=args.data_root,
            shots=args.shots,
            seeds=args.seeds,
            split=args.split,
            model=args.model,
            use_model=not args.no_model,
            raw_baseline=not args.no_raw,
            compare=compare,
            adapt=args.adapt,
            adapt_init=args.adapt_init,
            adapt_steps=args.adapt_steps,
            adapt_seeds=args.adapt_seeds,
            adapt_shots=args.adapt_shots,
            robustness=not args.no_robustness,
            robust_per_class=args.robust_per_class,
            open_set=not args.no_open_set,
            threads=args.threads,
            progress=args.progress,
        )
        result = evaluate(cfg, args.pm)
    except (CorpusError, ConditionUnavailable, FileNotFoundError, ValueError) as exc:
        print(f"lida eval: error: {exc}", file=sys.stderr)
        return 3
    except LidaError:
        raise
    command = _command(args)
    result["meta"]["command"] = command
    result["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    result["notes"] = _notes(result)
    _write_outputs(result, command, args)
    return 0


def _write_outputs(result: dict, command: str, args: argparse.Namespace) -> None:
    """results.json, plots and the Markdown report where ``--out``/``--report`` say; the summary (or ``--json``)."""
    from .report import markdown, write_json, write_plots

    written = []
    if args.out:
        out = Path(args.out)
        written.append(write_json(result, out / "results.json"))
        written += write_plots(result, out / "plots")
        (out / "report.md").write_text(markdown(result, command, "plots") + "\n")
        written.append(out / "report.md")
    if args.report:
        rep = Path(args.report)
        plots = rep.parent / "results"
        written += write_plots(result, plots)
        written.append(write_json(result, plots / "results.json"))
        rep.parent.mkdir(parents=True, exist_ok=True)
        rep.write_text(markdown(result, command, "results") + "\n")
        written.append(rep)
    if args.json:
        from .report import _clean

        json.dump(_clean(result), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(summary_text(result))
    for w in written:
        log.info("wrote %s", w)
    if written:
        print("wrote " + ", ".join(str(w) for w in written), file=sys.stderr)


def summary_text(result: dict) -> str:
    """A short plain-text table for the terminal."""
    from .report import _ms

    lines = []
    shots = [str(k) for k in result["meta"]["shots"]]
    lines.append("condition\t" + "\t".join(f"{k}-shot R1\t{k}-shot mAP" for k in shots))
    for n, c in result["conditions"].items():
        cells = []
        for k in shots:
            s = c["retrieval"].get(k, {}).get("summary", {})
            cells += [_ms(s.get("rank1_class_avg")), _ms(s.get("map_class_avg"))]
        lines.append(f"{n}\t" + "\t".join(cells))
    for n, c in result["conditions"].items():
        if c.get("detection"):
            lines.append(f"{n}: detection AUC {c['detection']['auc']:.4f}")
    for t in result.get("targets", []):
        lines.append(f"target: {t['target']}: {'met' if t['met'] else 'NOT met' if t['met'] is False else 'n/a'}")
    lines.append(f"({result['meta']['seconds']:.0f} s)")
    return "\n".join(lines)
