"""Text output that a file name cannot forge: control characters escaped, one record per line.

A file name may hold any byte but ``/`` and NUL: a newline or a tab in it would add a line or a
column to tab-separated text output, an escape sequence would rewrite the terminal. :func:`printable`
escapes, like ``ls -b``: ``\\n``, ``\\t``, ``\\r``, ``\\\\`` for a backslash, ``\\xHH`` for other
control bytes and for undecodable bytes in a name (Python keeps them as surrogates),
``\\uHHHH`` for other unprintable characters (format characters, line and paragraph separators).
JSON output needs none of this: JSON strings are escaped already.
"""

from __future__ import annotations

import json
import os
from typing import Any

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    o = ord(ch)
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte of a file name (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


def printable(text: object) -> str:
    """``text`` with every character that is not printable (or is a backslash) escaped; spaces kept."""
    s = str(text)
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(ch if (ch.isprintable() and ch != "\\") or ch == " " else _escape(ch) for ch in s)


def text_path(path: object) -> str:
    """``path`` as text that every UTF-8 writer takes (JSON readers, Arrow/Parquet, SQLite, C2PA): a file
    name that is not valid UTF-8 (Python keeps its undecodable bytes as the surrogates U+DC80..U+DCFF)
    gets each such byte as ``\\xHH`` (and any other lone surrogate as ``\\uHHHH``); a valid name is
    returned as it is. The file itself is still opened by its real name; this is what records say."""
    s = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join(_escape(ch) if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in s)


def utf8_safe(obj: Any) -> Any:
    """``obj`` (a JSON value) unchanged when all its strings are valid UTF-8, else a copy with every string
    through :func:`text_path` (a record of a file whose name is not valid UTF-8)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return obj
    except UnicodeEncodeError:
        return _clean(obj)


def _clean(obj: Any) -> Any:
    if isinstance(obj, str):
        return text_path(obj)
    if isinstance(obj, dict):
        return {text_path(k) if isinstance(k, str) else k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
