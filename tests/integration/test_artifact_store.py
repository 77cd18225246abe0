"""The ArtifactStore adapters behave alike: a local folder and Blob Storage (on Azurite, the real SDK)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from core.artifacts import ArtifactNotFound, ArtifactStore, ArtifactStoreUnavailable
from infrastructure.artifacts import blob
from infrastructure.artifacts.local import LocalArtifactStore
from infrastructure.settings import Settings
from triggers.runtime import build_artifact_store


def _container() -> str:
    return f"t{uuid.uuid4().hex[:20]}"


@pytest.fixture(params=["local", "blob"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "artifacts")
        return
    connection = request.getfixturevalue("azurite")
    yield blob.BlobArtifactStore(blob.container_from_connection_string(connection, _container()))


def test_put_get_and_overwrite(store: ArtifactStore) -> None:
    url = store.put("job1/report.json", b'{"a": 1}', "application/json")
    assert url == store.url("job1/report.json")
    assert store.get("job1/report.json") == b'{"a": 1}'
    store.put("job1/report.json", b"{}")
    assert store.get("job1/report.json") == b"{}"


def test_missing_artifact_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFound):
        store.get("nobody/report.json")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a\\b", "./a"])
def test_unsafe_keys_are_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put(key, b"x")


def test_blob_content_type_and_url_point_at_the_container(azurite: str) -> None:
    container = _container()
    store = blob.BlobArtifactStore(blob.container_from_connection_string(azurite, container))
    url = store.put("j/rows.csv", b"a,b\n1,2\n", "text/csv; charset=utf-8")
    assert url.endswith(f"/devstoreaccount1/{container}/j/rows.csv")
    service = BlobServiceClient.from_connection_string(azurite)
    properties = service.get_blob_client(container, "j/rows.csv").get_blob_properties()
    assert properties.content_settings.content_type == "text/csv; charset=utf-8"


def test_unreachable_blob_service_is_transient() -> None:
    from tests.azurite import connection_string

    dead = connection_string("http://127.0.0.1:9")  # discard port: nothing listens
    client = BlobServiceClient.from_connection_string(
        dead, connection_timeout=1, read_timeout=1, retry_total=0
    ).get_container_client("reports")
    with pytest.raises(ArtifactStoreUnavailable):
        blob.BlobArtifactStore(client).put("j/report.json", b"{}")


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({}, LocalArtifactStore),
        ({"artifacts_connection": "UseDevelopmentStorage=true"}, blob.BlobArtifactStore),
        ({"artifacts_account_url": "https://acct.blob.core.windows.net"}, blob.BlobArtifactStore),
    ],
)
def test_composition_root_picks_the_store_by_setting(overrides: dict[str, str], kind: Callable[..., object]) -> None:
    assert isinstance(build_artifact_store(Settings.for_tests(**overrides)), kind)  # type: ignore[arg-type]
