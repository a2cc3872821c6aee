"""What the watcher writes besides the journal: reports, quarantine copies, moved originals, temp sweeps."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from ..files import TMP_PREFIX, atomic_write
from ..textsafe import utf8_safe
from .items import Item
from .logs import event


class Outputs:
    """Mixin of :class:`~lida_plugin.watch.service.Watcher`: the files written for an asset."""

    def _report_path(self, rel: str) -> Path:
        return self.cfg.out_dir / (rel + ".json")

    def _quarantine(self, it: Item, record: dict[str, Any]) -> str | None:
        dest = self.cfg.quarantine / it.rel
        not_copied = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            st = os.lstat(it.path)
            if stat.S_ISLNK(st.st_mode) and not self.cfg.move_processed:
                # a copy would read what the link points at: a device such as /dev/zero without end, or a file
                # outside the watched folder into the quarantine; the link is named in the error file instead
                not_copied = f"a symbolic link to {os.readlink(it.path)!r}: not copied"
            elif not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                not_copied = "not a regular file: not copied or moved"
            elif self.cfg.move_processed:  # the quarantined file is then the user's only copy: never replace one
                dest = unused_name(dest)
                shutil.move(it.path, dest)  # a rename on the same file system; a link moves as a link
            else:
                tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}")
                shutil.copy2(it.path, tmp, follow_symlinks=False)
                os.replace(tmp, dest)
        except OSError as exc:
            event(logging.WARNING, "quarantine_copy_failed", path=it.path, error=exc.strerror or exc)
        if not_copied:
            event(logging.WARNING, "quarantine_not_copied", path=it.path, reason=not_copied)
        err = {"path": it.path, "quarantined_as": None if not_copied else str(dest), "error": record.get("error"),
               "sha256": it.sha256 or None, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "record": record} | ({"not_copied": not_copied} if not_copied else {})  # fmt: skip
        atomic_write(dest.with_name(dest.name + ".error.json"), (json.dumps(utf8_safe(err), indent=2) + "\n").encode())
        return None if not_copied else str(dest)

    def _move_processed(self, path: str, rel: str) -> str | None:
        dest = self.cfg.move_processed / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest = unused_name(dest)  # an earlier file of the same name (or anyone's) stays where it is
            shutil.move(path, dest)
        except OSError as exc:
            event(logging.WARNING, "move_failed", path=path, error=exc.strerror or exc)
            return None
        return str(dest)

    def _clean_temp_files(self) -> None:
        # report temps (.lida-tmp-<name>...) and manifest temps (.<name>.lida-tmp-<pid>-<hex>) a kill left behind
        from ..tempfiles import sweep_stale_temps

        sweep_stale_temps(self.cfg.excluded_dirs(), recursive=True, owned=True)

    def _unquarantine(self, stale: list[tuple[str, str]]) -> None:
        """Remove the quarantine entries of earlier, unreadable bytes of paths that now hold other bytes (a
        partial file of a slow writer), unless the new bytes went to the quarantine again (then replaced)."""
        for path, sha in stale if self.cfg.quarantine is not None and not self.cfg.move_processed else ():
            dest = self.cfg.quarantine / os.path.relpath(path, self.cfg.in_dir)
            err = dest.with_name(dest.name + ".error.json")
            with contextlib.suppress(OSError, ValueError):
                if json.loads(err.read_text()).get("sha256") == (None if sha == "unreadable" else sha):
                    dest.unlink(missing_ok=True)
                    err.unlink()


def unused_name(dest: Path) -> Path:
    """``dest``, or when something of that name is there already ``<stem>.<n><suffix>`` with the first free
    ``n``: a moved original is the user's only copy, so a second upload of ``image.png`` must not replace
    the first one's (the watcher is the only writer of the folders it moves into)."""
    if not os.path.lexists(dest):
        return dest
    for n in itertools.count(1):
        q = dest.with_name(f"{dest.stem}.{n}{dest.suffix}")
        if not os.path.lexists(q):
            return q
    raise AssertionError("unreachable")


def read_report(path: str | None, sha256: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if sha256 is not None and ((rec.get("image") or {}).get("sha256") != sha256 or rec.get("status") != "ok"):
        return None
    rec.pop("duplicate_of", None)
    return rec
