"""``lida verify``: validate a C2PA manifest (embedded or sidecar) and decode our assertion.

Exit codes (also in ``lida verify --help`` and docs/provenance.md):

* 0: **Trusted**: signature, hashes and certificate chain check out against a trust anchor
* 4: **Valid**: signature and hashes check out, but the signer is not trusted (no anchor given,
  or the chain does not lead to one); ``--allow-untrusted`` makes this 0
* 5: **Invalid**: the asset or the manifest was altered, or the manifest is corrupt
* 6: no C2PA manifest found (nothing embedded, no sidecar)
* 2: usage error; 3: setup error (an unreadable trust anchor, a missing file)
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from . import hookimpl
from .errors import LidaError
from .provenance import ASSERTION_LABEL, make_context, mime_for, read_store

EXIT_TRUSTED, EXIT_VALID, EXIT_INVALID, EXIT_NO_MANIFEST = 0, 4, 5, 6


class VerifyError(LidaError):
    """The file or a trust anchor cannot be read."""


#: The largest sidecar or trust anchor read (a C2PA manifest store with its thumbnails is kilobytes to a few MB).
MAX_SIDE_BYTES = 64 << 20


def _not_a_file(p: Path, max_bytes: int | None = None, what: str = "") -> str | None:
    """Why ``p`` cannot be read as a file (missing, a folder, a FIFO or device, with ``max_bytes`` larger
    than that ``what`` can be), or None when it can."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, socket or device)"
    if max_bytes is not None and st.st_size > max_bytes:
        return f"is {st.st_size} bytes, more than a {what} can be ({max_bytes >> 20} MiB)"
    return None


def _read_small(path: Path, what: str) -> bytes:
    """The bytes of ``path``, a regular file of at most :data:`MAX_SIDE_BYTES` (a FIFO would block, a
    device such as /dev/zero never end), or :class:`VerifyError` naming it and ``what`` it was to be."""
    why = _not_a_file(path, MAX_SIDE_BYTES, what)
    if why is not None:
        raise VerifyError(f"{path}: cannot read the {what}: {why}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def _read_anchor(path: str) -> bytes:
    data = _read_small(Path(path).expanduser(), "trust anchor")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise VerifyError(f"{path}: not a PEM certificate (expected e.g. the root-ca.pem from `lida keys init`)")
    return data


def verify(
    path: str | os.PathLike[str], *, sidecar: str | os.PathLike[str] | None = None, trust_anchors: list[str] = ()
) -> dict[str, Any]:
    """The verification report for ``path`` (see :func:`exit_code`)."""
    p = Path(path)
    why = _not_a_file(p)
    if why is not None:
        raise VerifyError(f"{p}: {why}")
    anchors = [_read_anchor(a) for a in trust_anchors]
    side_path = Path(sidecar) if sidecar else None
    side_bytes = None if side_path is None else _read_small(side_path, "sidecar")
    ctx = make_context(anchors)
    try:
        mime, is_image = _sniff_mime(p)
        summary, store = read_store(p, sidecar=side_bytes, mime=mime, context=ctx)
        if summary["status"] == "corrupt" and not is_image and side_bytes is None:
            # an empty or a text file is no asset with a broken manifest ("Invalid", exit 5, read as
            # "altered"): say what it is
            raise VerifyError(
                f"{p}: not an image (Pillow cannot open it) and c2pa cannot read it: {summary.get('error')}"
            )
        where = "sidecar" if side_bytes is not None else "embedded"
        auto = p.with_suffix(".c2pa")
        if summary["status"] == "none" and side_bytes is None and auto.is_file():
            summary, store = read_store(p, sidecar=_read_small(auto, "sidecar"), mime=mime, context=ctx)
            where, side_path = "sidecar", auto
    finally:
        ctx.close()
    report: dict[str, Any] = {"path": str(p), "manifest_source": where if summary["status"] != "none" else None}
    if side_path is not None:
        report["sidecar"] = str(side_path)
    report["trust_anchors"] = list(trust_anchors)
    if summary["status"] == "present":
        state = summary.get("validation_state")
        report |= {
            "state": state,
            "failure_codes": summary.get("failure_codes", []),
            "codes": _all_codes(store),
            "active_manifest": summary.get("active_manifest"),
            "signer": summary.get("signer"),
            "claim_generator": summary.get("claim_generator"),
            "digital_source_types": summary.get("digital_source_types"),
            "manifests": summary.get("manifests"),
            "ingredients": _ingredients(store, summary.get("active_manifest")),
            "lida_attribution": summary.get("lida_attribution"),
        }
    elif summary["status"] == "none":
        report |= {"state": None, "error": "no C2PA manifest found (embedded or sidecar)"}
    else:
        report |= {"state": "Invalid", "failure_codes": ["manifest.unreadable"], "error": summary.get("error")}
    return report


def _sniff_mime(p: Path) -> tuple[str, bool]:
    """``(MIME type, whether Pillow opens the file as an image)``."""
    try:
        from PIL import Image

        with Image.open(p) as im:
            return mime_for(p, im.format), True
    except Exception:  # not an image Pillow knows: trust the suffix
        return mime_for(p), False


def _all_codes(store: dict | None) -> dict[str, list[str]]:
    am = ((store or {}).get("validation_results") or {}).get("activeManifest") or {}
    return {k: [e.get("code") for e in am.get(k) or []] for k in ("success", "informational", "failure")}


def _ingredients(store: dict | None, active: str | None) -> list[dict[str, Any]]:
    """Every ingredient (``depth`` 0: the active manifest's; deeper: its ingredients' manifests), each validated."""
    from .evidence.c2pa import ingredients

    deltas = ((store or {}).get("validation_results") or {}).get("ingredientDeltas") or []
    return [
        {"title": i["title"], "relationship": i["relationship"], "active_manifest": i["manifest"], "depth": i["depth"],
         "validation_state": i["validation_state"], "failure_codes": i["failure_codes"]}
        for i in ingredients(store or {}, active, deltas)
    ]  # fmt: skip


def exit_code(report: dict[str, Any], allow_untrusted: bool = False) -> int:
    state = report.get("state")
    if state == "Trusted":
        return EXIT_TRUSTED
    if state == "Valid":
        return EXIT_TRUSTED if allow_untrusted else EXIT_VALID
    if state is None:
        return EXIT_NO_MANIFEST
    return EXIT_INVALID


def _line(text: str) -> None:
    """One output line; control characters from a file name or a manifest (title, signer) escaped."""
    from .textsafe import printable

    print(printable(text))


def _print_text(r: dict[str, Any]) -> None:
    state = r.get("state")
    if state is None:
        _line(f"{r['path']}: no C2PA manifest")
        return
    _line(f"{r['path']}: {state} ({r.get('manifest_source')}{' ' + r['sidecar'] if r.get('sidecar') else ''})")
    if state == "Valid":
        why = "no trust anchor given" if not r.get("trust_anchors") else "the signer does not chain to a given anchor"
        _line(f"  signature and hashes check out; signer not trusted ({why})")
    if r.get("error"):
        _line(f"  error: {r['error']}")
    for code in r.get("failure_codes") or []:
        _line(f"  failure: {code}")
    s = r.get("signer") or {}
    if s:
        _line(f"  signer: {s.get('common_name')} / {s.get('issuer')} ({s.get('alg')})")
    if r.get("digital_source_types"):
        _line(f"  digital source type: {', '.join(r['digital_source_types'])}")
    for i in r.get("ingredients") or []:
        chained = f", its manifest {i['active_manifest']}" if i.get("active_manifest") else ", no manifest"
        state = f": {i['validation_state']}" if i.get("validation_state") else ""
        fails = [c for c in i.get("failure_codes") or [] if c != "signingCredential.untrusted"]
        state += f" ({', '.join(fails)})" if fails else ""
        _line(f"  {'  ' * i.get('depth', 0)}ingredient: {i.get('title')} ({i.get('relationship')}{chained}){state}")
    a = r.get("lida_attribution")
    if a:
        gen = a.get("generator") or "-"
        _line(f"  {ASSERTION_LABEL} v{a.get('version')}: {a.get('verdict')}, generator {gen}, score {a.get('score')}")
        model = a.get("model") or {}
        _line(f"    model {model.get('id')} sha256 {str(model.get('sha256'))[:16]}..., store {a.get('store_id')}")


def cmd_verify(args: argparse.Namespace) -> int:
    anchors = list(args.trust_anchor or [])
    if not anchors and os.environ.get("LIDA_TRUST_ANCHOR"):
        anchors = [os.environ["LIDA_TRUST_ANCHOR"]]
    report = verify(args.path, sidecar=args.sidecar, trust_anchors=anchors)
    code = exit_code(report, args.allow_untrusted)
    report["exit_code"] = code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    sys.stdout.flush()
    return code


@hookimpl
def lida_register_commands(subparsers: argparse._SubParsersAction, pm) -> None:
    sub = subparsers
    p = sub.add_parser(
        "verify",
        help="validate a C2PA manifest and show our attribution",
        description="Validate the C2PA manifest of PATH (embedded, or the sidecar <stem>.c2pa / --sidecar) and decode"
        " the org.lida.attribution assertion.",
        epilog="exit codes: 0 Trusted, 4 Valid but untrusted signer (0 with --allow-untrusted), 5 Invalid,"
        " 6 no manifest, 2 usage error, 3 setup error",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--sidecar", metavar="FILE", help="a sidecar manifest store (.c2pa) for PATH")
    p.add_argument("--trust-anchor", metavar="PEM", action="append",
                   help="root certificate(s) to trust, e.g. root-ca.pem from `lida keys init` (repeatable;"
                        " default $LIDA_TRUST_ANCHOR)")  # fmt: skip
    p.add_argument("--allow-untrusted", action="store_true", help="exit 0 for Valid (untrusted signer) too")
    p.add_argument("--json", action="store_true", help="the full report as JSON")
    p.set_defaults(func=cmd_verify)
