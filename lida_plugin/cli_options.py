"""What every ``lida`` command shares: exit codes, the model/store/manifest options, path expansion.

A public module, so that plugins adding their own commands (``lida_register_commands``) offer
the same options with the same meaning. It imports nothing heavy: a command's modules are
imported when it runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from .cores import DEVICES, check_parallel, counts_setting
from .errors import LidaError
from .files import is_image_name

log = logging.getLogger("lida")

EXIT_OK, EXIT_FILE_ERRORS, EXIT_USAGE, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: The reader of the output went away (a closed pipe): 128 + SIGPIPE, what a shell reports for such a process.
EXIT_BROKEN_PIPE = 141

#: ``--manifest`` choices: no manifest, a ``.c2pa`` sidecar beside the asset, or a signed embedded copy.
MANIFEST_MODES = ("none", "sidecar", "embed")
#: ``--source-type-policy`` choices (see docs/provenance.md).
SOURCE_TYPE_POLICIES = ("assertion", "action", "action-attributed")


class UsageError(LidaError):
    """A combination of options that cannot work; the command line turns it into exit status 2."""


def check_environment() -> None:
    """``ValueError`` naming the variable when ``$LIDA_DEVICE`` or ``$LIDA_COUNTS`` holds a value no command
    takes (empty counts as unset, as for every ``LIDA_*``): checked when a command starts, so the answer is
    a usage error (exit 2), not a setup error deep in a worker."""
    device = os.environ.get("LIDA_DEVICE", "").strip()
    if device and device not in DEVICES:
        raise ValueError(f"LIDA_DEVICE={device!r}: use one of {', '.join(DEVICES)}")
    counts_setting()


def at_least_one(option: str):
    """An argparse ``type`` for ``option``: a whole number >= 1, else a usage error naming the option."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"{value!r}: {option} must be a whole number >= 1")
        return n

    return parse


#: ``-k/--top-k``: how many registered generators a record lists, at least 1 (the nearest one is the answer;
#: 0 used to be taken and to turn every verdict into 'no generator is registered').
top_k_arg = at_least_one("--top-k")
#: ``--batch-size``: crops per encoder call, at least 1 (0 or less used to be taken as 1 without a word).
batch_size_arg = at_least_one("--batch-size")


def threads_arg(value: str) -> int | None:
    """``--threads`` / ``$LIDA_THREADS``: a whole number of threads, at most :func:`parallel_limit`; ``0``
    or empty: every core (``None``)."""
    if not value.strip():
        return None
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of threads (--threads or $LIDA_THREADS)") from None
    try:
        check_parallel(n, "the number of threads (--threads or $LIDA_THREADS)")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return n or None


FORCE_HELP = (
    "give a verdict even when the fingerprint is unreliable: for a lossy file (JPEG, lossy WebP, ...) the lossy "
    "detector's detection verdict without a generator, for others (palette, CMYK, ...) the fingerprint's"
)


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """``--force``, the same for every command that attributes."""
    p.add_argument("--force", action="store_true", help=FORCE_HELP)


def add_model_args(
    p: argparse.ArgumentParser,
    *,
    device_help: str = "execution provider (default: $LIDA_DEVICE, else auto = CUDA when available, else CPU)",
    device_default: str = "auto",
    threads_help: str = "CPU threads for the encoder (default: $LIDA_THREADS, else all cores; one for a model"
    " whose SPAM counts lida computes itself, such as the bundled one)",
    threads_default: int | None = None,
    batch_size_default: int | None = 64,
    batch_size_help: str = "crops per encoder call (default 64)",
):
    """``--model``, ``--device``, ``--threads``, ``--batch-size`` (a command with other defaults, such as
    ``lida batch``'s one thread per worker, passes them); returns the argument group."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="encoder ONNX file (default: $LIDA_MODEL, else the bundled model)")
    g.add_argument("--device", default=os.environ.get("LIDA_DEVICE", "").strip() or device_default,
                   choices=list(DEVICES), help=device_help)  # fmt: skip
    # a string default goes through threads_arg too, so a bad $LIDA_THREADS is a usage error naming it
    default = threads_default or os.environ.get("LIDA_THREADS") or None
    g.add_argument("--threads", type=threads_arg, default=default, help=threads_help)
    g.add_argument("--batch-size", type=batch_size_arg, default=batch_size_default, help=batch_size_help)
    return g


def add_store_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("store")
    g.add_argument("--store", help="user exemplar store (default: $LIDA_STORE, else the per-user data dir)")
    g.add_argument("--no-default-store", action="store_true", help="do not search the bundled default store")


def open_encoder(args: argparse.Namespace):
    """The :class:`~lida_plugin.encoder.Encoder` that :func:`add_model_args`' options describe."""
    from .encoder import Encoder

    return Encoder(args.model, device=args.device, threads=args.threads, batch_size=args.batch_size)


def add_manifest_args(p: argparse.ArgumentParser) -> None:
    """``--manifest``, ``--out``, ``--in-place`` and the signing options (see docs/provenance.md)."""
    g = p.add_argument_group("provenance (C2PA)")
    g.add_argument("--manifest", choices=MANIFEST_MODES, default="none",
                   help="write the finding into a signed C2PA manifest: sidecar <stem>.c2pa (asset untouched),"
                        " embed (a signed copy in --out), or none (default)")  # fmt: skip
    g.add_argument(
        "--out", metavar="DIR", help="folder for signed copies / sidecars (default for sidecars: next to the asset)"
    )
    g.add_argument(
        "--in-place",
        action="store_true",
        help="embed into the original itself (atomic replace; the original is kept as <name>.lida-bak)",
    )
    add_signing_args(g)


def add_signing_args(g) -> None:
    """``--keys`` and ``--source-type-policy``: shared by ``lida attribute`` and ``lida watch``."""
    g.add_argument(
        "--keys", metavar="PATH", help="signing keys folder or config (default: $LIDA_KEYS, else the user folder)"
    )
    g.add_argument("--source-type-policy", choices=SOURCE_TYPE_POLICIES, default="assertion",
                   help="where the IPTC trainedAlgorithmicMedia source type goes for AI verdicts: in our assertion only"
                        " (default), also on the c2pa.opened action, or on the action only when a registered generator"
                        " matched")  # fmt: skip


def expand_paths(paths: list[str], recursive: bool) -> Iterator[tuple[str, str | None]]:
    """``(path, error)`` pairs: files as given, directories walked when ``recursive``.

    ``-`` reads paths from standard input, one per line. A directory without ``recursive``
    yields an error record; a recursive walk keeps image suffixes only and skips hidden names.
    """
    for raw in paths:
        if raw == "-":
            for line in sys.stdin:
                line = line.rstrip("\n")
                if line:
                    yield from expand_paths([line], recursive)
            continue
        p = Path(raw)
        if p.is_dir():
            if not recursive:
                yield raw, "is a directory (pass --recursive to walk it)"
                continue
            for root, dirs, files in os.walk(
                p, onerror=lambda e: log.warning("cannot walk %s: %s", e.filename, e.strerror)
            ):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and is_image_name(f):
                        yield str(Path(root) / f), None
        else:
            yield raw, None


def check_manifest_args(args: argparse.Namespace) -> str:
    """The ``--manifest`` mode after checking that ``--out``/``--in-place`` fit it (:class:`UsageError` if not)."""
    mode = getattr(args, "manifest", "none") or "none"
    if mode == "none":
        if getattr(args, "in_place", False) or getattr(args, "out", None):
            raise UsageError("--out and --in-place need --manifest sidecar or --manifest embed")
        return mode
    if args.in_place and args.out:
        raise UsageError("--in-place and --out exclude each other")
    if args.in_place and mode != "embed":
        raise UsageError("--in-place only applies to --manifest embed (sidecars never modify the asset)")
    if mode == "embed" and not args.in_place and not args.out:
        raise UsageError(
            "--manifest embed writes signed copies: give --out DIR (or --in-place to replace the originals)"
        )
    return mode
