"""Text output that a file name cannot forge: control characters escaped, one record per line.

A file name may hold any byte but ``/`` and NUL: a newline or a tab in it would add a line or a
column to tab-separated text output, an escape sequence would rewrite the terminal. :func:`printable`
escapes, like ``ls -b``: ``\\n``, ``\\t``, ``\\r``, ``\\\\`` for a backslash, ``\\xHH`` for other
control bytes and for undecodable bytes in a name (Python keeps them as surrogates),
``\\uHHHH`` for other unprintable characters (format characters, line and paragraph separators).
JSON output needs none of this: JSON strings are escaped already.
"""

from __future__ import annotations

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
