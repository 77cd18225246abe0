"""The input manifest: which files a run reads, with sizes and SHA-256 hashes, fixed when the run is submitted.

`build_manifest` runs on submit (the ingest job's `prepare`), never in parameter validation: it finds each
domain's files as `discover` does and hashes them. The manifest becomes part of the job's parameters, hence of
its id. At run time `check_present` (discover stage) and `check_unchanged` (before a file is read) fail the run
clearly when a file was removed or changed since — a new submission then makes a new job for the new contents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidParameters, PermanentError
from core.services import Services
from services.ingestion.catalog import UnknownDomain
from services.ingestion.discovery import NoSourceFiles, discover
from services.ingestion.warehouse import IngestRuntime

HASH_BLOCK = 1 << 20


class InputFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class DomainInputs(BaseModel):
    """One domain's input files as found on submit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(min_length=1)
    folder: str
    version: str | None = None
    matched: int = Field(ge=0, description="Files matching the patterns (before max_files)")
    files: list[InputFile] = Field(min_length=1)


class InputChanged(PermanentError):
    """A file of the run's manifest is gone or differs from what was submitted."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _invalid(message: str) -> InvalidParameters:
    return InvalidParameters("ingest", [{"field": "domains", "message": message}])


def build_manifest(parameters: Mapping[str, Any], services: Services) -> list[dict[str, Any]]:
    """Per requested domain: folder, version and every selected file with size and hash."""
    runtime = IngestRuntime.of(services)
    catalog = runtime.catalog()
    raw = parameters.get("domains")
    domains = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    manifest = []
    for name in dict.fromkeys(domains):
        if not isinstance(name, str):
            continue  # validation names the bad value
        try:
            domain = catalog.domain(name)
            found = discover(domain.name, domain.source, runtime.data_root(),
                             period=parameters.get("period"), max_files=parameters.get("max_files"))
        except (UnknownDomain, NoSourceFiles) as exc:
            raise _invalid(str(exc)) from exc
        files = [{"path": str(p), "size": p.stat().st_size, "sha256": file_sha256(p)} for p in found.files]
        manifest.append({"domain": domain.name, "folder": str(found.folder), "version": found.version,
                         "matched": found.matched, "files": files})
    return manifest


def check_present(inputs: DomainInputs) -> None:
    """Every file is still there with its submitted size (cheap; the hash is checked before reading)."""
    for item in inputs.files:
        path = Path(item.path)
        if not path.is_file():
            raise InputChanged(f"{inputs.domain}: input {path} was removed after the run was submitted; "
                               "submit again to ingest what is there now (a new job)")
        if path.stat().st_size != item.size:
            raise InputChanged(f"{inputs.domain}: input {path} changed after the run was submitted "
                               f"(size {item.size} → {path.stat().st_size}); submit again for a new job")


def check_unchanged(path: Path, sha256: str) -> None:
    """The file's content hash is still the submitted one."""
    actual = file_sha256(path) if path.is_file() else "missing"
    if actual != sha256:
        raise InputChanged(f"input {path} changed after the run was submitted (sha256 {sha256[:12]}… → "
                           f"{actual[:12]}…); submit again to ingest the new contents (a new job)")
