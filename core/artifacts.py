"""ArtifactStore: the port through which run reports and other files produced by jobs are written and read.

A key is a relative, slash-separated name such as `<job_id>/report.json`; `url` answers where an operator finds
the artifact (a file path locally, a blob URL on Azure). Adapters live in `infrastructure/artifacts/`.
"""

from __future__ import annotations

from typing import Protocol

from core.errors import PermanentError, TransientError


class ArtifactNotFound(PermanentError):
    """No artifact under that key."""


class ArtifactStoreUnavailable(TransientError):
    """The artifact storage could not be reached or refused for a reason that may pass."""


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store `data` under `key`, replacing what was there; answer its `url`."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under `key`; `ArtifactNotFound` if there are none."""
        ...

    def url(self, key: str) -> str:
        """Where the artifact under `key` lives (it need not exist yet)."""
        ...


def checked_key(key: str) -> str:
    """`key` if it is a safe relative name: non-empty segments, no `.`/`..`, no backslash, no leading slash."""
    parts = key.split("/")
    if not key or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid artifact key {key!r}: use relative names like 'job_id/report.json'")
    return key
