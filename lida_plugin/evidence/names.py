"""Model, checkpoint and tool names found in metadata -> lida generator ids and families.

The table is ``lida_plugin/data/model-names.json``; users extend it with their own files, checked
*before* the built-in one (first match wins):

1. ``$LIDA_MODEL_NAMES``: one or more JSON files (separated by ``os.pathsep``); a missing one is an error;
2. ``<user data dir>/lida-plugin/model-names.json`` (e.g. ``~/.local/share/lida-plugin/model-names.json``) if it exists.

Format (docs/provenance.md)::

    {"version": 1, "names": [{"regex": "my[-_]?model", "generator": "my-model", "family": "my-family"},
                              {"glob": "acme-*.safetensors", "generator": null, "family": "acme"},
                              {"regex": "retouchpro", "claim": "edited"}]}

Each entry has exactly one of ``regex`` (Python ``re``, searched anywhere, case-insensitive) or ``glob``
(``fnmatch`` on the whole name, case-insensitive); ``claim`` is ``ai-generated`` (default),
``composite-ai``, ``camera-capture`` or ``edited``. A malformed file is a setup error
(:class:`ModelNamesError`, exit 3) naming the file and the entry.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import LidaError

ENV = "LIDA_MODEL_NAMES"
FILE_NAME = "model-names.json"
#: Largest names file read, and the most entries in one.
MAX_FILE_BYTES = 1 << 20
MAX_ENTRIES = 10_000
#: Longest pattern, and the longest name matched (a name is cut there: bounded regex work).
MAX_PATTERN = 500
MAX_NAME = 300
ENTRY_CLAIMS = ("ai-generated", "composite-ai", "camera-capture", "edited")


class ModelNamesError(LidaError):
    """A model-names file cannot be used (unreadable, not JSON, a bad entry)."""


@dataclass(frozen=True)
class NameHit:
    """What a name means: its claim and ids, and the entry that matched (``origin``: file and index)."""

    claim: str
    generator: str | None
    family: str | None
    origin: str


@dataclass(frozen=True)
class _Entry:
    match: re.Pattern[str]
    hit: NameHit


class NameTable:
    """An ordered list of patterns; :meth:`lookup` returns the first that matches."""

    def __init__(self, entries: list[_Entry], files: list[str]) -> None:
        self.entries = entries
        self.files = files

    def lookup(self, name: str | None) -> NameHit | None:
        if not isinstance(name, str):
            return None
        s = name.strip()[:MAX_NAME]
        if not s:
            return None
        for e in self.entries:
            if e.match.search(s):
                return e.hit
        return None


def builtin_path() -> Path:
    return Path(str(resources.files("lida_plugin") / "data" / FILE_NAME))


def user_paths() -> list[tuple[Path, bool]]:
    """``(path, required)`` of the user files, in lookup order."""
    out: list[tuple[Path, bool]] = []
    env = os.environ.get(ENV, "").strip()
    if env:
        out += [(Path(p).expanduser(), True) for p in env.split(os.pathsep) if p.strip()]
    try:
        from platformdirs import user_data_dir

        out.append((Path(user_data_dir("lida-plugin", appauthor=False)) / FILE_NAME, False))
    except Exception:  # no user data dir on this platform: only the environment and the built-in table
        pass
    return out


def _where(path: Path, i: int | None = None) -> str:
    return f"{path}" if i is None else f"{path}: names[{i}]"


def parse_table(text: str | bytes, path: Path) -> list[_Entry]:
    """The entries of one names file; :class:`ModelNamesError` names the file and the entry at fault."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelNamesError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("names"), list):
        raise ModelNamesError(f'{path}: expected a JSON object with a "names" list (see docs/provenance.md)')
    if doc.get("version", 1) != 1:
        raise ModelNamesError(f"{path}: version {doc.get('version')!r} is not supported (expected 1)")
    if len(doc["names"]) > MAX_ENTRIES:
        raise ModelNamesError(f"{path}: {len(doc['names'])} entries, more than the {MAX_ENTRIES} allowed")
    entries = []
    for i, e in enumerate(doc["names"]):
        where = _where(path, i)
        if not isinstance(e, dict):
            raise ModelNamesError(f"{where}: expected an object, got {type(e).__name__}")
        unknown = set(e) - {"regex", "glob", "generator", "family", "claim", "note"}
        if unknown:
            raise ModelNamesError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        kinds = [k for k in ("regex", "glob") if k in e]
        if len(kinds) != 1:
            raise ModelNamesError(f'{where}: needs exactly one of "regex" or "glob"')
        pat = e[kinds[0]]
        if not isinstance(pat, str) or not pat or len(pat) > MAX_PATTERN:
            raise ModelNamesError(f"{where}: {kinds[0]} must be a non-empty string of at most {MAX_PATTERN} characters")
        regex = pat if kinds[0] == "regex" else "^" + fnmatch.translate(pat)  # a glob matches the whole name
        try:
            compiled = re.compile(regex, re.IGNORECASE)
        except re.error as exc:
            raise ModelNamesError(f"{where}: bad {kinds[0]} {pat!r}: {exc}") from None
        for key in ("generator", "family"):
            if e.get(key) is not None and (not isinstance(e[key], str) or not e[key].strip()):
                raise ModelNamesError(f"{where}: {key} must be a non-empty string or null")
        claim = e.get("claim", "ai-generated")
        if claim not in ENTRY_CLAIMS:
            raise ModelNamesError(f"{where}: claim {claim!r} is not one of {', '.join(ENTRY_CLAIMS)}")
        entries.append(_Entry(compiled, NameHit(claim, e.get("generator"), e.get("family"), f"{path.name}#{i}")))
    return entries


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ModelNamesError(f"{path}: {size} bytes, larger than the {MAX_FILE_BYTES} byte limit")
        return path.read_text(encoding="utf-8")
    except ModelNamesError:
        raise
    except FileNotFoundError:
        raise ModelNamesError(f"{path}: no such file (named by ${ENV})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelNamesError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


_lock = threading.Lock()
_cache: dict[tuple, NameTable] = {}


def _key(paths: list[tuple[Path, bool]]) -> tuple:
    key: list = []
    for p, required in paths:
        try:
            st = p.stat()
            key.append((str(p), st.st_mtime_ns, st.st_size))
        except OSError:
            key.append((str(p), required, None))
    return tuple(key)


def load_names() -> NameTable:
    """The table in use: user files first, then the built-in one (cached until a user file changes).

    Raises :class:`ModelNamesError` (a setup error) for a malformed or missing user file.
    """
    paths = user_paths()
    key = _key(paths)
    with _lock:
        table = _cache.get(key)
        if table is not None:
            return table
        entries: list[_Entry] = []
        files: list[str] = []
        for p, required in paths:
            if not required and not p.is_file():
                continue
            entries += parse_table(_read(p), p)
            files.append(str(p))
        b = builtin_path()
        entries += parse_table(b.read_text(encoding="utf-8"), b)
        files.append(str(b))
        table = NameTable(entries, files)
        _cache.clear()
        _cache[key] = table
        return table


def lookup(name: str | None, table: NameTable | None = None) -> NameHit | None:
    """What ``name`` means according to ``table`` (default: :func:`load_names`)."""
    return (table or load_names()).lookup(name)
