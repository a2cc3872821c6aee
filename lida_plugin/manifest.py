"""Writing the attribution into signed C2PA manifests (``lida attribute --manifest sidecar|embed``).

Per asset, one c2pa ``Builder``; one ``Signer`` is shared (thread-safe: :meth:`ManifestWriter.apply`
may be called from several threads). Files are streamed, never loaded whole.

The manifest holds:

* ``c2pa.actions.v2`` whose first action is ``c2pa.opened`` on the parent ingredient (the asset as
  it was, with any manifest it already carried: that one is kept as the parent's manifest);
* ``org.lida.attribution`` (version :data:`ASSERTION_VERSION`, JSON Schema in
  ``schemas/lida-attribution-assertion.schema.json``): verdict, generator, family, score,
  neighbours, detection score and threshold, model id and file hash, store id, reliability and,
  for an AI verdict, the IPTC digital source type ``trainedAlgorithmicMedia``.

Source-type policy (``--source-type-policy``, see docs/provenance.md): ``assertion`` (default)
keeps the IPTC source type inside our assertion only, as a *detector finding*; ``action`` also puts
it on the ``c2pa.opened`` action (viewers then show "AI-generated" as the signer's claim) for every
AI verdict; ``action-attributed`` does so only when a registered generator was matched.

Where files go: ``sidecar`` writes ``<stem>.c2pa`` next to the asset (or in ``--out``) and leaves
the asset byte-identical; ``embed`` writes a signed copy into ``--out``; ``--in-place`` replaces
the original atomically (write to a temporary file in the same folder, verify it, hard-link the
original to ``<name>.lida-bak`` and rename the signed file over it). Every write goes through a
temporary file and is verified before it is renamed into place; the source is hashed before and
after signing. Any failure leaves the original untouched and is reported in the record's
``manifest`` key (``status: "error"``); the command then exits 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import errno
import io
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from . import __version__
from .cli_options import MANIFEST_MODES, SOURCE_TYPE_POLICIES, check_manifest_args
from .errors import LidaError
from .files import file_sha256
from .keys import SigningConfig, load_signing_config, make_signer
from .provenance import ASSERTION_LABEL, TRAINED, compare, make_context, mime_for, read_store
from .tempfiles import hold, sweep_stale_temps, temp_path
from .textsafe import text_path, utf8_safe

log = logging.getLogger(__name__)

ASSERTION_VERSION = 1
ASSERTION_SCHEMA_ID = "https://lida-plugin.invalid/schemas/lida-attribution-assertion/v1.json"
MODES = MANIFEST_MODES  # none | sidecar | embed
POLICIES = SOURCE_TYPE_POLICIES
#: Formats c2pa 0.38 embeds into (Builder.get_supported_mime_types narrowed to still images we analyse).
EMBED_MIMES = {"image/jpeg", "image/png", "image/webp", "image/tiff", "image/gif", "image/avif", "image/heic",
               "image/heif", "image/jxl", "image/dng"}  # fmt: skip
BACKUP_SUFFIX = ".lida-bak"


class OutputDirError(LidaError):
    """The ``--out`` folder cannot be created (a setup error: nothing was written)."""


class ManifestError(Exception):
    """One asset's manifest could not be written (the message is for the user)."""


def build_assertion(record: dict[str, Any], *, model_sha256: str | None) -> dict[str, Any]:
    """The ``org.lida.attribution`` assertion for an ``ok`` attribution record."""
    is_ai = record.get("verdict") == "ai-generated"
    det = record.get("detection") or {}
    rel = record.get("reliability") or {}
    return {
        "version": ASSERTION_VERSION,
        "schema": ASSERTION_SCHEMA_ID,
        "verdict": record.get("verdict"),
        "generator": record.get("generator"),
        "family": record.get("family"),
        "score": record.get("score"),
        "reason": record.get("reason"),
        "digital_source_type": TRAINED if is_ai else None,
        "detection": {"ai_score": det.get("ai_score"), "threshold": det.get("threshold")}
        | ({"detector": det["detector"]} if det.get("detector") else {}),
        "neighbors": [
            {"generator": n.get("generator"), "family": n.get("family"), "similarity": n.get("similarity")}
            for n in record.get("neighbors") or []
        ],
        "reliability": {
            "reliable": bool(rel.get("reliable", True)),
            "forced": bool(rel.get("forced", False)),
            "reasons": list(rel.get("reasons") or []),
        },  # fmt: skip
        "model": {"id": record.get("model_id"), "sha256": model_sha256},
        "store_id": record.get("store_id"),
        "asset_sha256": (record.get("image") or {}).get("sha256"),
        "evidence": [{k: v for k, v in i.items() if k != "ingredients"} for i in record.get("evidence") or []],
        "disagreement": list(record.get("disagreement") or []),
        "decided_by": record.get("decided_by"),
        "analysed_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "software": {"name": "lida-plugin", "version": __version__},
    }


def source_type_on_action(record: dict[str, Any], policy: str) -> bool:
    if record.get("verdict") != "ai-generated":
        return False
    if policy == "action":
        return True
    if policy == "action-attributed":
        return record.get("generator") is not None
    return False


def build_manifest(record: dict[str, Any], title: str, mime: str, *, model_sha256: str | None, policy: str) -> dict:
    opened: dict[str, Any] = {
        "action": "c2pa.opened",
        "parameters": {"ingredientIds": ["parent"]},
        "softwareAgent": {"name": "lida-plugin", "version": __version__},
    }
    if source_type_on_action(record, policy):
        opened["digitalSourceType"] = TRAINED
    return {
        "claim_generator_info": [{"name": "lida-plugin", "version": __version__}],
        "title": title,
        "format": mime,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [opened]}},
            {"label": ASSERTION_LABEL, "data": build_assertion(record, model_sha256=model_sha256)},
        ],
    }


class _RandomAccess(io.RawIOBase):
    """A readable, writable, seekable raw stream: what the c2pa ``Stream`` wrapper asks of a file."""

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True


class _Discard(_RandomAccess):
    """A seekable sink: sidecar signing copies the asset to its destination, which we do not need."""

    def __init__(self) -> None:
        self.pos = 0

    def write(self, b) -> int:
        self.pos += len(b)
        return len(b)

    def readinto(self, b) -> int:
        return 0

    def seek(self, off: int, whence: int = 0) -> int:
        self.pos = off if whence == 0 else self.pos + off
        return self.pos

    def tell(self) -> int:
        return self.pos


class _Guarded(_RandomAccess):
    """Wraps the destination file: remembers the first OSError (disk full, ...) the native side swallows."""

    def __init__(self, f) -> None:
        self.f = f
        self.error: OSError | None = None

    def _call(self, fn, *a):
        try:
            return fn(*a)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def write(self, b) -> int:
        return self._call(self.f.write, b)

    def readinto(self, b) -> int:
        return self._call(self.f.readinto, b)

    def seek(self, off: int, whence: int = 0) -> int:
        return self._call(self.f.seek, off, whence)

    def tell(self) -> int:
        return self.f.tell()

    def flush(self) -> None:
        self._call(self.f.flush)


def _open_temp(path: Path):
    """Create the temporary output file (exclusive); tests replace this to simulate a full disk."""
    return open(path, "x+b")


def _os_reason(exc: OSError, where: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {where}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"destination not writable: {where} ({exc.strerror or exc})"
    return f"cannot write {where}: {exc.strerror or exc}"


class ManifestWriter:
    """Signs one asset at a time into a sidecar or an embedded manifest; thread-safe."""

    def __init__(
        self,
        config: SigningConfig,
        *,
        mode: str = "sidecar",
        out_dir: str | os.PathLike[str] | None = None,
        in_place: bool = False,
        policy: str = "assertion",
        model_sha256: str | None = None,
        trust_anchors: list[bytes] | None = None,
        pm=None,
    ) -> None:
        if mode not in ("sidecar", "embed"):
            raise ValueError(f"mode must be sidecar or embed, not {mode!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
        if mode == "embed" and not in_place and out_dir is None:
            raise ValueError("embedding needs --out DIR or --in-place")
        self.config = config
        self.mode = mode
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.in_place = in_place
        self.policy = policy
        self.model_sha256 = model_sha256
        self.pm = pm  # whose lida_manifest_assertions are signed in; None: no plugin assertions
        anchors = list(trust_anchors or [])
        if config.trust_anchor is not None and config.trust_anchor.is_file():
            anchors.append(config.trust_anchor.read_bytes())
        self.anchor_names = [str(config.trust_anchor)] if config.trust_anchor else []
        self.signer = make_signer(config)
        self.context = make_context()  # for building: thumbnails off
        self.read_context = make_context(anchors)  # for reading: our anchors trusted
        self._lock = threading.Lock()
        self._claimed: set[Path] = set()
        self._swept: set[Path] = set()
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputDirError(f"--out {self.out_dir}: cannot create it: {exc.strerror or exc}") from None

    def close(self) -> None:
        for r in (self.signer, self.context, self.read_context):
            try:
                r.close()
            except Exception:  # already closed
                pass

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public ------------------------------------------------------------------------------
    def apply(self, record: dict[str, Any]) -> bool:
        """Add ``provenance`` and ``manifest`` to ``record``, writing the manifest; ``False`` when that failed."""
        if record.get("status") != "ok":
            record["manifest"] = {"status": "skipped", "reason": "the file was not analysed"}
            record.setdefault("provenance", None)
            return True
        try:
            return self._apply(record)
        except Exception as exc:  # a bug or an unforeseen library error: still one file's error, not a traceback
            log.debug("manifest writer failed", exc_info=True)
            log.error("%s: manifest not written: internal error: %s", record.get("path"), exc)
            record["manifest"] = {"status": "error", "error": f"internal error: {exc}", "original_untouched": True}
            record.setdefault("provenance", None)
            return False

    def _apply(self, record: dict[str, Any]) -> bool:
        src = Path(record["path"])
        mime = mime_for(src, (record.get("image") or {}).get("format"))
        prior, prior_source = self._prior(src, mime)
        prior_report = dict(prior) | {"source": prior_source}
        prior_report["comparison"] = compare(prior, record)
        record["provenance"] = prior_report
        kind = "embedded" if self.mode == "embed" else "sidecar"
        notes: list[str] = []
        if kind == "embedded" and mime not in EMBED_MIMES:
            kind = "sidecar"
            notes.append(f"{mime} cannot carry an embedded C2PA manifest; wrote a sidecar instead (asset unchanged)")
        try:
            info = self._write(record, src, mime, kind, prior_report, notes)
        except ManifestError as exc:
            record["manifest"] = {"status": "error", "kind": kind, "error": str(exc), "original_untouched": True}
            log.error("%s: manifest not written: %s", src, exc)
            return False
        record["manifest"] = info | {"notes": notes}
        cmp_ = prior_report.get("comparison") or {}
        if cmp_.get("agrees") is False:
            log.warning("%s: prior provenance disagrees with the fingerprint: %s", src, cmp_.get("detail"))
        return True

    # -- steps ---------------------------------------------------------------------------------
    def _prior(self, src: Path, mime: str) -> tuple[dict[str, Any], str | None]:
        summary, _ = read_store(src, mime=mime, context=self.read_context)
        if summary["status"] != "none":
            return summary, "embedded"
        side = src.with_suffix(".c2pa")
        if side.is_file():
            try:
                data = side.read_bytes()
            except OSError as exc:
                return {"status": "unreadable", "error": exc.strerror or str(exc)}, "sidecar"
            summary, _ = read_store(src, sidecar=data, mime=mime, context=self.read_context)
            if summary["status"] == "none":
                summary = {"status": "corrupt", "error": f"{side} holds no readable manifest"}
            return summary, "sidecar"
        return summary, None

    def _destination(self, src: Path, kind: str) -> Path:
        if kind == "sidecar":
            name = src.with_suffix(".c2pa").name
            return (self.out_dir / name) if self.out_dir is not None else src.with_suffix(".c2pa")
        if self.in_place:
            return src
        assert self.out_dir is not None
        return self.out_dir / src.name

    def _sweep_once(self, folder: Path) -> None:
        """Remove the temporary files a killed run left in ``folder`` (once per folder per writer;
        never a live writer's: see :mod:`lida_plugin.tempfiles`)."""
        key = folder.resolve()
        with self._lock:
            if key in self._swept:
                return
            self._swept.add(key)
        sweep_stale_temps([folder])

    def forget_claims(self) -> None:
        """Forget the destinations written so far. A batch run refuses to write one destination
        twice (two inputs with the same file name); a long-running service (``lida watch``) writes
        an asset's manifest again when the asset's bytes change, and calls this before each write."""
        with self._lock:
            self._claimed.clear()

    def _claim(self, dest: Path, src: Path) -> None:
        key = dest.resolve()
        with self._lock:
            if key in self._claimed:
                raise ManifestError(f"{dest} is already written by another input in this run (same file name)")
            self._claimed.add(key)
        if dest.resolve() == src.resolve() and not self.in_place:
            raise ManifestError(f"{dest} is the original; pass --in-place to sign it in place")

    def _write(
        self, record: dict[str, Any], src: Path, mime: str, kind: str, prior: dict[str, Any], notes: list[str]
    ) -> dict[str, Any]:

        dest = self._destination(src, kind)
        self._claim(dest, src)
        expected = (record.get("image") or {}).get("sha256")
        try:
            before = file_sha256(src)
        except OSError as exc:
            raise ManifestError(f"cannot read {src}: {exc.strerror or exc}") from None
        if expected and before != expected:
            raise ManifestError("the file changed after it was analysed; the verdict may not describe it")
        manifest = build_manifest(record, src.name, mime, model_sha256=self.model_sha256, policy=self.policy)
        manifest["assertions"] += self._plugin_assertions(src, record, manifest)
        self._sweep_once(dest.parent)
        tmp = temp_path(dest)  # .NAME.lida-tmp-<pid>-<hex>, locked while it exists: see tempfiles.py
        lock_fd = None
        try:
            try:
                out = _open_temp(tmp)
                lock_fd = hold(tmp)
            except OSError as exc:
                raise ManifestError(_os_reason(exc, dest.parent)) from None
            manifest_bytes, parent_note = self._sign(manifest, src, mime, kind, prior, notes, out, dest)
            try:
                after = file_sha256(src)
            except OSError as exc:
                raise ManifestError(f"cannot re-read {src}: {exc.strerror or exc}") from None
            if after != before:
                raise ManifestError("the file changed while it was being signed; nothing was written")
            check = self._check(tmp if kind == "embedded" else src, mime, manifest_bytes if kind == "sidecar" else None)
            self._require_valid(check, kind, prior)
            backup = self._install(tmp, dest, src, kind)
        finally:
            if tmp.exists():
                try:
                    tmp.unlink()
                except OSError:
                    log.warning("could not remove the temporary file %s", tmp)
            if lock_fd is not None:
                os.close(lock_fd)
        info = {
            "status": "ok",
            "kind": kind,
            "path": str(dest),
            "label": ASSERTION_LABEL,
            "assertion_version": ASSERTION_VERSION,
            "active_manifest": check["active_manifest"],
            "validation_state": check["validation_state"],
            "trust_anchors": self.anchor_names,
            "parent": parent_note,
            "source_type_on_action": source_type_on_action(record, self.policy),
            "signer": self.config.subject,
            "size": len(manifest_bytes),
        }
        if backup is not None:
            info["backup"] = str(backup)
        return info

    def _sign(
        self, manifest: dict, src: Path, mime: str, kind: str, prior: dict[str, Any], notes: list[str], out, dest: Path
    ) -> tuple[bytes, str]:
        """Sign ``manifest`` for ``src`` into the open temporary file ``out`` (the embedded copy, or the sidecar's
        bytes), fsync'd; ``(manifest bytes, what the parent ingredient is)``. Closes ``out``."""
        import c2pa

        parent_note = "asset without a manifest"
        manifest_bytes = b""
        guard = _Guarded(out)
        try:
            ingredient = {"title": text_path(src.name), "relationship": "parentOf", "label": "parent"}
            corrupt = prior.get("status") == "corrupt" and prior.get("source") == "embedded"
            if corrupt:  # c2pa cannot parse it: the parent is described, not read
                manifest["ingredients"] = [ingredient | {"format": mime}]
                parent_note = "asset whose prior manifest is corrupt (not carried into the signed output)"
                notes.append("the prior manifest could not be parsed; the signed output does not carry it")
            with open(src, "rb") as s, c2pa.Builder(utf8_safe(manifest), context=self.context) as builder:
                if not corrupt:
                    builder.add_ingredient(ingredient, mime, s)
                    s.seek(0)
                    if prior.get("status") == "present" and prior.get("source") == "embedded":
                        parent_note = "prior manifest kept as the parent ingredient"
                if kind == "sidecar":
                    builder.set_no_embed()
                    manifest_bytes = builder.sign(self.signer, mime, s, _Discard())
                    guard.write(manifest_bytes)
                else:
                    manifest_bytes = builder.sign(self.signer, mime, s, guard)
            guard.flush()
            os.fsync(out.fileno())
        except c2pa.C2paError as exc:
            if guard.error is not None:
                raise ManifestError(_os_reason(guard.error, dest)) from None
            raise ManifestError(f"c2pa could not sign: {exc}") from None
        except OSError as exc:
            raise ManifestError(_os_reason(guard.error or exc, dest)) from None
        finally:
            out.close()
        return manifest_bytes, parent_note

    def _require_valid(self, check: dict[str, Any], kind: str, prior: dict[str, Any]) -> None:
        """Raise :class:`ManifestError` unless the manifest just written reads back Valid or Trusted."""
        if check["validation_state"] not in ("Valid", "Trusted"):
            extra = ""
            if kind == "sidecar" and prior.get("status") in ("present", "corrupt") and prior.get("source"):
                extra = (
                    " (c2pa cannot make a verifiable sidecar for an asset that already embeds a manifest:"
                    " use --manifest embed, which keeps that manifest as the parent)"
                )
            raise ManifestError(
                f"the written manifest does not verify ({check['validation_state']}:"
                f" {', '.join(check['failure_codes']) or 'no codes'}){extra}"
            )

    def _check(self, path: Path, mime: str, sidecar: bytes | None) -> dict[str, Any]:
        summary, _ = read_store(path, sidecar=sidecar, mime=mime, context=self.read_context)
        if summary["status"] != "present":
            raise ManifestError(f"the written manifest cannot be read back: {summary.get('error', summary['status'])}")
        return summary

    def _plugin_assertions(self, src: Path, record: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """Assertions from the ``lida_manifest_assertions`` plugins of :attr:`pm` (checked and filtered)."""
        if self.pm is None:
            return []
        from .manager import plugin_assertions

        return plugin_assertions(self.pm, path=str(src), record=record, manifest=manifest)

    def _install(self, tmp: Path, dest: Path, src: Path, kind: str) -> Path | None:
        """Rename ``tmp`` over ``dest``; when that replaces the original, an earlier sidecar or, for a signed
        copy in ``--out``, a file that is not a signed copy lida made (someone's own file of that name), keep a
        backup."""
        backup = None
        try:
            if dest.exists() and (
                (self.in_place and dest.resolve() == src.resolve())
                or kind == "sidecar"
                or (kind == "embedded" and not _lida_signed(dest))
            ):
                backup = _free_name(dest.with_name(dest.name + BACKUP_SUFFIX))
                try:
                    os.link(dest, backup)  # zero-copy: the original's bytes stay under the backup name
                except OSError:
                    shutil.copy2(dest, backup)
                shutil.copymode(dest, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            if backup is not None and backup.exists() and dest.exists():
                try:
                    backup.unlink()
                except OSError:
                    pass
            raise ManifestError(_os_reason(exc, dest)) from None
        return backup


def _lida_signed(p: Path) -> bool:
    """Whether ``p`` carries a manifest with lida's attribution assertion (a signed copy of an earlier run,
    which a new one may replace without a backup)."""
    from .provenance import read_store

    try:
        summary, _ = read_store(p)
    except Exception:  # noqa: BLE001 - unreadable or not an image: not ours, so it is kept
        return False
    return summary.get("status") == "present" and bool(summary.get("lida_attribution"))


def _free_name(p: Path) -> Path:
    if not p.exists():
        return p
    for i in range(1, 10_000):
        q = p.with_name(f"{p.name}.{i}")
        if not q.exists():
            return q
    raise ManifestError(f"too many backups next to {p}")


# -- CLI glue ----------------------------------------------------------------------------------
def writer_from_args(args: argparse.Namespace, encoder=None, *, pm=None) -> ManifestWriter | None:
    """The writer ``lida attribute`` uses, or ``None`` for ``--manifest none``; keys are checked here.
    ``pm``: the plugin manager whose ``lida_manifest_assertions`` are signed in (None: no plugin assertions)."""
    mode = check_manifest_args(args)
    if mode == "none":
        return None
    config = load_signing_config(args.keys)
    return ManifestWriter(
        config,
        mode=mode,
        out_dir=args.out,
        in_place=args.in_place,
        policy=args.source_type_policy,
        model_sha256=getattr(encoder, "sha256", None),
        pm=pm,
    )
