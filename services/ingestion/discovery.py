"""Finding a domain's workbooks: pick the version folder, match the patterns, filter by period, cap the count."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import PermanentError
from services.ingestion.config import SourceConfig, VersionStrategy


class NoSourceFiles(PermanentError):
    """Nothing to ingest for a domain: the folder is missing or no file matches."""


@dataclass(frozen=True, slots=True)
class Discovery:
    domain: str
    folder: Path
    version: str | None
    files: list[Path]
    matched: int


def pick_version(base: Path, source: SourceConfig) -> tuple[Path, str | None]:
    """The folder to read: the highest `V<n>`, the latest modified sub-folder, or `base` itself."""
    if source.version_folders is VersionStrategy.NONE:
        return base, None
    pattern = re.compile(source.version_pattern)
    folders = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if source.version_folders is VersionStrategy.HIGHEST:
        numbered = []
        for folder in folders:
            match = pattern.match(folder.name)
            if match:
                numbered.append((int(match.group(1)), folder))
        if not numbered:
            return base, None
        chosen = max(numbered, key=lambda item: item[0])[1]
    else:
        if not folders:
            return base, None
        chosen = max(folders, key=lambda p: (p.stat().st_mtime_ns, p.name))
    return chosen, chosen.name


def period_tokens(period: str) -> tuple[str, ...]:
    """'2024-06' → ('2024-06', '202406', '2024_06', '2024.06')."""
    year, month = period.split("-")
    return (f"{year}-{month}", f"{year}{month}", f"{year}_{month}", f"{year}.{month}")


def matching_files(folder: Path, source: SourceConfig, period: str | None) -> list[Path]:
    found: set[Path] = set()
    for pattern in source.patterns:
        found.update(p for p in folder.glob(pattern) if p.is_file())
    files = [p for p in found if not any(fnmatch.fnmatch(p.name, x) for x in source.exclude)]
    if period:
        tokens = period_tokens(period)
        files = [p for p in files if any(t in p.name for t in tokens)]
    return sorted(files, key=lambda p: str(p))


def discover(
    domain: str, source: SourceConfig, data_root: Path, *, period: str | None = None, max_files: int | None = None
) -> Discovery:
    base = Path(source.base_folder)
    base = base if base.is_absolute() else data_root / base
    if not base.is_dir():
        raise NoSourceFiles(f"domain {domain!r}: base folder {base} does not exist")
    folder, version = pick_version(base, source)
    files = matching_files(folder, source, period)
    if not files:
        wanted = ", ".join(source.patterns) + (f" for period {period}" if period else "")
        raise NoSourceFiles(f"domain {domain!r}: no file in {folder} matches {wanted}")
    selected = files if max_files is None else files[:max_files]
    return Discovery(domain, folder, version, selected, len(files))
