"""Discovery: version folders, patterns and excludes, period filter, max_files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from services.ingestion.config import SourceConfig, VersionStrategy
from services.ingestion.discovery import NoSourceFiles, discover


def touch(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def source(**overrides: Any) -> SourceConfig:
    return SourceConfig.model_validate({"base_folder": "d", "patterns": ["*report*.xlsx"], **overrides})


def test_highest_version_folder_wins_numerically(tmp_path):
    touch(tmp_path / "d" / "V2" / "report_a.xlsx")
    touch(tmp_path / "d" / "V10" / "report_b.xlsx")
    touch(tmp_path / "d" / "archive" / "report_c.xlsx")
    found = discover("x", source(), tmp_path)
    assert found.version == "V10"
    assert [p.name for p in found.files] == ["report_b.xlsx"]


def test_latest_modified_and_no_versions(tmp_path):
    touch(tmp_path / "d" / "old" / "report.xlsx")
    touch(tmp_path / "d" / "new" / "report.xlsx")
    os.utime(tmp_path / "d" / "old", (1_000, 1_000))
    os.utime(tmp_path / "d" / "new", (2_000, 2_000))
    assert discover("x", source(version_folders="latest_modified"), tmp_path).version == "new"
    touch(tmp_path / "d" / "report_top.xlsx")
    flat = discover("x", source(version_folders=VersionStrategy.NONE), tmp_path)
    assert (flat.version, [p.name for p in flat.files]) == (None, ["report_top.xlsx"])


def test_excludes_period_and_max_files(tmp_path):
    for name in ["report_2024-05.xlsx", "report_202406_a.xlsx", "report_2024-06_b.xlsx", "~$report_2024-06.xlsx"]:
        touch(tmp_path / "d" / "V1" / name)
    assert len(discover("x", source(), tmp_path).files) == 3
    june = discover("x", source(), tmp_path, period="2024-06")
    assert [p.name for p in june.files] == ["report_2024-06_b.xlsx", "report_202406_a.xlsx"]
    capped = discover("x", source(), tmp_path, max_files=2)
    assert (len(capped.files), capped.matched) == (2, 3)


def test_missing_folder_and_no_match_are_clear_errors(tmp_path):
    with pytest.raises(NoSourceFiles, match=r"base folder .* does not exist"):
        discover("x", source(), tmp_path)
    touch(tmp_path / "d" / "V1" / "other.xlsx")
    with pytest.raises(NoSourceFiles, match=r"no file in .*V1 matches \*report\*\.xlsx"):
        discover("x", source(), tmp_path)
