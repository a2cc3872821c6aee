"""An example extra sink plugin: appends every finished asset's record to a JSON-lines file.

Register it on a plugin manager (``pm.register(example_sink)``), or install it as a plugin with
an entry point in the ``lida_plugin`` group::

    [project.entry-points.lida_plugin]
    example-sink = "lida_hooks.example_sink"

The file is ``$LIDA_EXAMPLE_SINK`` (default ``lida-sink.jsonl`` in the working directory). It also
adds an ``org.example.ingest`` assertion to every C2PA manifest lida writes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from lida_plugin import hookimpl

_lock = threading.Lock()


def sink_path() -> str:
    return os.environ.get("LIDA_EXAMPLE_SINK", "lida-sink.jsonl")


@hookimpl
def lida_asset_done(path: str, record: dict[str, Any], outputs: dict[str, str]) -> None:
    line = json.dumps(
        {
            "path": path,
            "status": record.get("status"),
            "verdict": record.get("verdict"),
            "generator": record.get("generator"),
            "error": record.get("error"),
            "outputs": outputs,
        }
    )
    with _lock, open(sink_path(), "a", encoding="utf-8") as f:  # one writer at a time: whole lines only
        f.write(line + "\n")


@hookimpl
def lida_manifest_assertions(path: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "label": "org.example.ingest",
            "data": {
                "ingested_by": "example-host",
                "sink": sink_path(),
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        }
    ]
