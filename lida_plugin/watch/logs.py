"""The watcher's log: one ``event=... key=value`` line (or a JSON object) per event."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

log = logging.getLogger("lida.watch")


def event(level: int, event: str, **fields: Any) -> None:
    if log.isEnabledFor(level):
        text = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        log.log(level, f"event={event} {text}".rstrip(), extra={"event": event, "fields": fields})


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    s = str(v)
    return json.dumps(s) if (not s or any(c in s for c in ' "=') or not s.isprintable()) else s  # no forged lines


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ``ts``, ``level``, ``event`` and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower()}
        out["event"] = getattr(record, "event", None) or "message"
        out.update(getattr(record, "fields", None) or {"message": record.getMessage()})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s lida.watch %(message)s"
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(fmt))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
