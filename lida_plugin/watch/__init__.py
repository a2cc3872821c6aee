"""``lida watch``: attribute every image that lands in a drop folder, exactly once, unattended.

Design (``docs/watch.md``):

* **Observer / handler split.** A watchdog observer thread feeds :class:`_Handler`, which only
  tells the :class:`Tracker` that a path changed, was closed after writing (Linux), arrived by
  an atomic rename, or went away. Nothing is read in the observer thread.
* **Complete files only.** The scheduler thread hands a path to the workers once its size and
  mtime have stayed the same for ``settle`` seconds, or ``close_settle`` seconds after a
  close-after-write, or at once after a rename into the folder. Temporary and partial names
  (dotfiles, ``~*``, ``*.part``, ``*.tmp``, ``*.crdownload``, ...) and non-image suffixes are
  ignored.
* **Nothing missed.** An initial scan, then events, plus a rescan every ``rescan`` seconds;
  scans skip files the journal knows by path, size and mtime, and hash the others, so a
  missed event costs one rescan interval, never an asset.
* **Exactly once.** The :class:`~lida_plugin.journal.Journal` is keyed by path and content
  hash. Reports are written atomically (temp file + rename) before the journal commit, and a
  report that already holds this path and hash is adopted on restart instead of being redone:
  a SIGKILL anywhere leaves neither a torn nor a duplicate report.
* **Duplicates.** Bytes already analysed under another name are not analysed again: the new
  name gets its own report, a copy of the first result with its own ``path`` and a
  ``duplicate_of`` field naming the first asset.
* **Bad files** get an error report (``status: "error"``) and, with ``--quarantine``, a copy
  (moved instead with ``--move-processed``) plus ``<name>.error.json`` beside it. The run goes on.
* **One model session.** Workers decode and crop in parallel; one encoder thread embeds what
  is ready in batches; one writer thread writes reports, journals and calls the
  ``lida_asset_done`` hook.
"""

from __future__ import annotations

from .config import WatchConfig, is_candidate

__all__ = ["WatchConfig", "Watcher", "is_candidate"]


def __getattr__(name: str):
    # Lazily: ``lida`` imports this package's command module at every start to build its parser,
    # and that must not pull in the service (numpy, the attributor, watchdog).
    if name == "Watcher":
        from .service import Watcher

        return Watcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
