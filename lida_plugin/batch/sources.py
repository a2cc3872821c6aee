"""What ``lida batch`` attributes: SOURCE to a list of asset paths, and how a worker reads one.

SOURCE is one of:

* a folder (walked recursively; image suffixes only; hidden names skipped), local or a URI;
* a glob (``photos/**/*.png``; ``**`` crosses folders), local or a URI (``s3://bucket/a/*.png``);
* a list of paths, one per asset: ``.txt``/``.lst`` (one per line; ``#`` starts a comment),
  ``.csv`` (a ``path`` column, else the first column) or ``.parquet`` (a ``path`` column);
  each listed path may itself be local or a URI;
* a single image file.

URIs (``scheme://...``) go through :func:`pyarrow.fs.FileSystem.from_uri` (``file``, ``s3``,
``gs``, ``hdfs``, ``abfs``); any other scheme through ``fsspec`` when it is installed (wrapped in
:class:`pyarrow.fs.PyFileSystem`). Local paths are made absolute, so a rerun from another folder
resumes the same job. The asset's identity in the output (the ``path`` column) is that string.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InputError, LidaError
from ..files import is_image_name

log = logging.getLogger(__name__)

LIST_SUFFIXES = {".txt", ".lst", ".csv", ".parquet"}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
_GLOB_CHARS = set("*?[")


class SourceError(LidaError):
    """SOURCE cannot be listed (missing, unreadable, an unknown scheme, a list without paths)."""


def is_uri(path: str) -> bool:
    return bool(_URI.match(path))


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and is_image_name(base)  # the suffixes of lida attribute --recursive


def _visible(rel: str) -> bool:
    return not any(part.startswith(".") for part in rel.split("/") if part)


# -- filesystems ---------------------------------------------------------------------------
_fs_cache: dict[str, object] = {}
_fs_lock = threading.Lock()


def filesystem_for(uri: str):
    """``(pyarrow FileSystem, path inside it)`` for a URI; filesystems are cached per scheme and host."""
    import pyarrow.fs as pafs

    scheme, rest = uri.split("://", 1)
    key = f"{scheme}://{rest.split('/', 1)[0]}"
    with _fs_lock:
        fs = _fs_cache.get(key)
    if fs is not None:
        return fs, _inner_path(fs, uri)
    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError: a scheme it does not know
        fs = _fsspec_filesystem(scheme, uri, exc)
        inner = _inner_path(fs, uri)
    with _fs_lock:
        _fs_cache[key] = fs
    return fs, inner


def _fsspec_filesystem(scheme: str, uri: str, arrow_exc: Exception):
    import pyarrow.fs as pafs

    try:
        import fsspec
    except ImportError:
        raise SourceError(
            f"{uri}: pyarrow cannot open {scheme}:// ({arrow_exc}) and fsspec is not installed (pip install fsspec)"
        ) from None
    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except Exception as exc:
        raise SourceError(f"{uri}: no filesystem for {scheme}:// ({exc})") from None


def _inner_path(fs, uri: str) -> str:
    """The path inside ``fs`` for ``uri`` (bucket/key for object stores, the absolute path for file://)."""
    import pyarrow.fs as pafs

    rest = uri.split("://", 1)[1]
    if isinstance(fs, pafs.LocalFileSystem):
        return "/" + rest.lstrip("/") if not rest.startswith("/") else rest
    if isinstance(fs, pafs.PyFileSystem):  # fsspec: it strips its own protocol
        return fs.handler.fs._strip_protocol(uri)
    return rest


def _scheme_host(uri: str) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://" + (rest.split("/", 1)[0] + "/" if "/" in rest and scheme != "file" else "")


def read_asset(path: str) -> bytes | None:
    """The bytes of a URI asset (for :meth:`Attributor.prepare`'s ``data``), or None for a local
    path (``prepare`` reads and checks local files itself). Raises :class:`InputError` naming the
    asset when the filesystem cannot read it."""
    if not is_uri(path):
        return None
    import pyarrow as pa

    try:
        fs, inner = filesystem_for(path)
        info = fs.get_file_info(inner)
        import pyarrow.fs as pafs

        if info.type == pafs.FileType.NotFound:
            raise InputError(path, "no such file")
        if info.type == pafs.FileType.Directory:
            raise InputError(path, "is a directory")
        with fs.open_input_stream(inner) as f:
            return f.read()
    except InputError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise InputError(path, f"cannot read it: {exc}") from None


# -- listing -------------------------------------------------------------------------------
def list_assets(source: str) -> list[str]:
    """Every asset under ``source`` (see the module doc), each once, in a stable order."""
    paths = _list_uri(source) if is_uri(source) else _list_local(source)
    seen: set[str] = set()
    out = []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _list_local(source: str) -> Iterator[str]:
    p = Path(source).expanduser()
    if any(c in source for c in _GLOB_CHARS) and not p.exists():
        hits = sorted(glob.glob(str(p), recursive=True))
        files = [h for h in hits if os.path.isfile(h)]
        if not files:
            raise SourceError(f"{source}: the pattern matches no files")
        yield from (os.path.abspath(h) for h in files)
        return
    if p.is_dir():
        yield from _walk_local(p)
        return
    if not p.exists():
        raise SourceError(f"{source}: no such file or folder")
    if p.suffix.lower() in LIST_SUFFIXES:
        yield from _resolve_listed(_read_list(source, p.suffix.lower(), None), base=p.parent)
        return
    yield str(p.absolute())


def _walk_local(root: Path) -> Iterator[str]:
    def onerror(e: OSError) -> None:
        log.warning("cannot walk %s: %s", e.filename, e.strerror)

    for d, dirs, files in os.walk(root, onerror=onerror):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in sorted(files):
            if _is_image(f):
                yield str((Path(d) / f).absolute())


def _resolve_listed(paths: Iterable[str], base: Path) -> Iterator[str]:
    """Listed local paths are relative to the list's folder; URIs stay as they are."""
    for raw in paths:
        s = raw.strip()
        if not s:
            continue
        yield s if is_uri(s) else str((base / Path(s).expanduser()).absolute())


def _read_list(name: str, suffix: str, fs) -> list[str]:
    """Paths from a ``.txt``/``.lst``/``.csv``/``.parquet`` list (``fs``: a pyarrow filesystem, or None for local)."""
    try:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pq.read_table(name, columns=["path"], filesystem=fs)
            kind = table.schema.field("path").type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise SourceError(f"{name}: the Parquet list's 'path' column holds {kind}, not strings")
            return [v for v in table.column("path").to_pylist() if v]
        if fs is None:
            text = Path(name).read_text(encoding="utf-8-sig")  # -sig: the byte-order mark Excel writes
        else:
            with fs.open_input_stream(name) as f:
                text = f.read().decode("utf-8-sig")
    except SourceError:
        raise
    except KeyError:
        raise SourceError(f"{name}: a Parquet list needs a 'path' column") from None
    except UnicodeDecodeError:
        raise SourceError(f"{name}: a path list must be UTF-8 text") from None
    except Exception as exc:
        if "path" in str(exc) and suffix == ".parquet":
            raise SourceError(f"{name}: a Parquet list needs a 'path' column ({exc})") from None
        raise SourceError(f"{name}: cannot read the list: {exc}") from None
    if suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text, newline="")))  # a quoted field may hold a newline
        if not rows:
            return []
        header = [h.strip().lower() for h in rows[0]]
        col = header.index("path") if "path" in header else 0
        start = 1 if "path" in header else 0
        return [r[col] for r in rows[start:] if len(r) > col and r[col].strip()]
    return [ln for ln in (x.strip() for x in text.splitlines()) if ln and not ln.startswith("#")]


def _list_uri(source: str) -> Iterator[str]:
    import pyarrow.fs as pafs

    fs, inner = filesystem_for(source)
    prefix = _scheme_host(source)
    to_uri = (lambda p: "file://" + p) if isinstance(fs, pafs.LocalFileSystem) else (lambda p: prefix + p.lstrip("/"))
    if isinstance(fs, pafs.PyFileSystem):  # fsspec: use its own protocol prefix
        proto = source.split("://", 1)[0]
        to_uri = lambda p: f"{proto}://{p}"  # noqa: E731
    if any(c in inner for c in _GLOB_CHARS):
        base = inner.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
        pattern = re.compile(_glob_regex(inner))
        infos = _selector(fs, base, source)
        hits = sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and pattern.fullmatch(i.path) and _visible(i.path[len(base) :])
        )  # like a shell glob, * does not match hidden names
        if not hits:
            raise SourceError(f"{source}: the pattern matches no files")
        yield from (to_uri(h) for h in hits)
        return
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{source}: no such file or folder")
    if info.type == pafs.FileType.Directory:
        for i in sorted(_selector(fs, inner, source), key=lambda i: i.path):
            rel = i.path[len(inner.rstrip("/")) :]
            if i.type == pafs.FileType.File and _is_image(i.path) and _visible(rel):
                yield to_uri(i.path)
        return
    suffix = os.path.splitext(inner)[1].lower()
    if suffix in LIST_SUFFIXES:
        parent = source.rsplit("/", 1)[0]
        for s in _read_list(inner, suffix, fs):
            s = s.strip()
            yield s if is_uri(s) or s.startswith("/") else f"{parent}/{s}"
        return
    yield source


def _selector(fs, base: str, source: str):
    import pyarrow.fs as pafs

    try:
        return fs.get_file_info(pafs.FileSelector(base, recursive=True))
    except (OSError, FileNotFoundError) as exc:
        raise SourceError(f"{source}: cannot list {base}: {exc}") from None


def _glob_regex(pattern: str) -> str:
    """A glob to a regex: ``**`` crosses folders, ``*``/``?`` do not."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)))
        i += 1
    return "".join(out)
