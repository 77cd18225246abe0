"""LocalArtifactStore: artifacts as files under one folder (the local default, `COREMACHINE_REPORTS_DIR`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.artifacts import ArtifactNotFound, checked_key


class LocalArtifactStore:
    """Files under `root`; a write goes to a temporary file first and is renamed, so readers never see half."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*checked_key(key).split("/"))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return self.url(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"no artifact {key!r} under {self._root}") from exc

    def url(self, key: str) -> str:
        return str(self._path(key).absolute())
