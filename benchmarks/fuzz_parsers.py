"""The long fuzzing run over the parsers that face untrusted bytes (the short one is tests/test_fuzz.py).

    nice -n 19 python benchmarks/fuzz_parsers.py --examples 1000000 --log runs/fuzz.log --findings runs/fuzz-findings

Inputs are seeded mutations (``tests/fuzz_harness.py``: bit flips, boundary integers in length
fields, inserted/deleted/duplicated blocks, truncations) of small generated images in every format
(with ICC, EXIF, XMP blocks), of real files from ../shared (C2PA conformance JPEGs, generated PNGs)
and of freshly signed assets and sidecars. Each runs in a worker process under a memory limit with a
time budget; anything but a record or a clean error is a finding, saved to ``--findings`` as the input
bytes plus a ``.txt`` with the target, seed and traceback. Input ``i`` is ``mutate(seed, Random(i))``,
so ``--start I --examples 1`` replays one. One process (``--workers 1``) by default.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_harness import Sandbox, generated_seeds, mutate, real_seeds, signed_seeds  # noqa: E402

#: Share of executions per target (decoding is the hottest path; c2pa reads are slower).
WEIGHTS = {"decode": 0.45, "decode-libspng": 0.2, "evidence": 0.2, "c2pa": 0.2, "sidecar": 0.15}


def build_corpus(max_real_bytes: int) -> dict[str, list[tuple[str, bytes, bytes | None]]]:
    gen = generated_seeds()
    real = real_seeds(limit_bytes=max_real_bytes)
    with tempfile.TemporaryDirectory() as d:
        embedded, sidecars = signed_seeds(Path(d), gen)
    c2pa_real = {k: v for k, v in real.items() if "c2pa-public-testfiles" in k or k.endswith(".png")}
    return {
        "decode": [(k, v, None) for k, v in (gen | real).items()],
        "decode-libspng": [(k, v, None) for k, v in (gen | real).items() if v[:8] == b"\x89PNG\r\n\x1a\n"],
        "evidence": [(k, v, None) for k, v in (gen | real | embedded).items()],
        "c2pa": [(k, v, None) for k, v in (embedded | c2pa_real | {"gen.png": gen["gen.png"]}).items()],
        "sidecar": [(k, v, gen[k.split("/", 1)[1]]) for k, v in sidecars.items()],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10_000, help="total executions across the parsers")
    ap.add_argument("--start", type=int, default=0, help="first input index (replay: --start I --examples 1)")
    ap.add_argument("--targets", default="decode,evidence,c2pa,sidecar",
                    help="comma-separated; also decode-libspng (PNGs by libspng and Pillow, compared)")  # fmt: skip
    ap.add_argument("--max-real-bytes", type=int, default=700_000, help="skip larger real seed files")
    ap.add_argument(
        "--real-share",
        type=float,
        default=0.1,
        help="share of inputs mutated from the (large) real files; the rest from small generated ones",
    )
    ap.add_argument("--budget", type=float, default=20.0, help="seconds one input may take")
    ap.add_argument("--memory-gib", type=float, default=3.0, help="address-space limit of the worker")
    ap.add_argument("--findings", type=Path, default=Path("runs/fuzz-findings"))
    ap.add_argument("--log", type=Path, help="append progress lines (JSON) here")
    ap.add_argument("--every", type=int, default=20_000, help="progress line every N executions")
    args = ap.parse_args(argv)

    targets = [t for t in args.targets.split(",") if t]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # kill PID: stop cleanly, print the counts
    corpus = build_corpus(args.max_real_bytes)
    weights = [WEIGHTS[t] for t in targets]
    split = {}  # per target: (entries from the real files, entries from the small generated ones)
    for t in targets:
        split[t] = (
            [e for e in corpus[t] if e[0].startswith("shared/")],
            [e for e in corpus[t] if e[0][:7] != "shared/"],
        )
    sandbox = Sandbox(memory_limit=int(args.memory_gib * (1 << 30)), budget=args.budget)
    counts = {t: {"executions": 0, "record": 0, "error": 0} for t in targets}
    findings: list[dict] = []
    t0 = time.monotonic()

    def progress(i: int) -> None:
        line = {"done": i - args.start, "elapsed_s": round(time.monotonic() - t0, 1), "per_target": counts,
                "findings": len(findings), "worker_restarts": sandbox.restarts}  # fmt: skip
        text = json.dumps(line)
        print(text, flush=True)
        if args.log:
            with args.log.open("a") as f:
                f.write(text + "\n")

    try:
        for i in range(args.start, args.start + args.examples):
            rnd = random.Random(i)
            target = rnd.choices(targets, weights)[0]
            real, small = split[target]
            name, seed, extra = rnd.choice(real if real and rnd.random() < args.real_share else small)
            data = mutate(seed, rnd)
            out = sandbox.call(target, data, extra)
            c = counts[target]
            c["executions"] += 1
            if out.kind == "clean":
                c["record" if out.detail.startswith("record") else "error"] += 1
            else:
                args.findings.mkdir(parents=True, exist_ok=True)
                stem = args.findings / f"{target}-{i}"
                stem.with_suffix(".bin").write_bytes(data)
                info = {"index": i, "target": target, "seed": name, "kind": out.kind, "detail": out.detail}
                stem.with_suffix(".txt").write_text(json.dumps(info, indent=2) + "\n")
                findings.append(info)
                print(f"FINDING {target} #{i} ({name}): {out.kind}: {out.detail.splitlines()[-1:]}", flush=True)
            if (i - args.start + 1) % args.every == 0:
                progress(i + 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        i -= 1
    finally:
        sandbox.close()
    progress(i + 1)
    total = sum(c["executions"] for c in counts.values())
    print(f"{total} executions, {len(findings)} finding(s), {time.monotonic() - t0:.0f} s", flush=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
