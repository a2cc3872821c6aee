"""What the watcher is told: its configuration, which names it looks at, and its constants."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cli_options import MANIFEST_MODES
from ..files import is_image_name

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp", ".lock", ".filepart")
WRITE_GROUP = 64  # assets completed per journal transaction at most
BATCH_WAIT = 0.02  # seconds the encoder waits for a fuller batch while files are queued


def is_candidate(name: str) -> bool:
    """Whether a file name is one the watcher analyses (not hidden, not temporary, an image suffix)."""
    if name.startswith((".", "~")) or name.lower().endswith(TEMP_SUFFIXES):
        return False
    return is_image_name(name)


@dataclass
class WatchConfig:
    in_dir: Path
    out_dir: Path | None = None
    quarantine: Path | None = None
    move_processed: Path | None = None
    manifest: str = "none"
    workers: int = 2
    batch: int = 8
    settle: float = 1.0
    close_settle: float = 0.1
    rescan: float = 60.0
    stats_interval: float = 60.0
    recursive: bool = False
    polling: bool = False
    journal: Path | None = None
    tick: float = 0.05

    def __post_init__(self) -> None:
        self.in_dir = Path(self.in_dir).resolve()
        for name in ("out_dir", "quarantine", "move_processed", "journal"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, Path(v).resolve())
        if self.journal is None:
            self.journal = (self.out_dir or self.in_dir) / ".lida-watch.sqlite"
        for name, opt in (("out_dir", "--out"), ("quarantine", "--quarantine"), ("move_processed", "--move-processed")):
            v = getattr(self, name)
            if v is not None and (v == self.in_dir or v in self.in_dir.parents):
                # its files are not watched (excluded_dirs): the watched folder itself would be, and nothing
                # would ever be analysed
                raise ValueError(
                    f"{opt} {v} is the watched folder or a folder above it; use a folder beside or inside it"
                )
        if self.manifest not in MANIFEST_MODES:
            raise ValueError(f"manifest must be one of {MANIFEST_MODES}")
        self.workers = max(1, int(self.workers))
        self.batch = max(1, int(self.batch))

    def excluded_dirs(self) -> list[Path]:
        """Output folders that must not be watched even when they sit inside the input folder."""
        return [p for p in (self.out_dir, self.quarantine, self.move_processed) if p is not None]
