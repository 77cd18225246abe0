"""BlobArtifactStore: artifacts as block blobs in one Azure Storage container (azure-storage-blob).

Authentication is either a connection string (Azurite, or a key-based account) or the account URL with
`DefaultAzureCredential` (managed identity on Azure: no secret in app settings; the identity needs the
"Storage Blob Data Contributor" role on the account or container). The container is created on first write.
Storage errors leave as `ArtifactStoreUnavailable` (transient) or `ArtifactNotFound`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from core.artifacts import ArtifactNotFound, ArtifactStoreUnavailable, checked_key

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

_CONNECT_SECONDS, _READ_SECONDS = 10, 60
"""A storage call never hangs a worker thread for long (the SDK's own retries run within these)."""


def container_from_connection_string(connection: str, container: str) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(
        connection, connection_timeout=_CONNECT_SECONDS, read_timeout=_READ_SECONDS
    )
    return service.get_container_client(container)


def container_from_account_url(account_url: str, container: str, credential: TokenCredential) -> ContainerClient:
    """Identity auth: `credential` is the process's managed identity (see `infrastructure.identity`)."""
    service = BlobServiceClient(
        account_url, credential=credential, connection_timeout=_CONNECT_SECONDS, read_timeout=_READ_SECONDS
    )
    return service.get_container_client(container)


@contextmanager
def _translated(action: str, key: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError as exc:
        raise ArtifactNotFound(f"no artifact {key!r}: {exc.reason or exc}") from exc
    except AzureError as exc:
        raise ArtifactStoreUnavailable(f"blob storage {action} {key!r} failed: {type(exc).__name__}: {exc}") from exc


class BlobArtifactStore:
    """Blobs named by key in one container. Clients of azure-storage-blob are safe to share between threads."""

    def __init__(self, container: ContainerClient | Callable[[], ContainerClient]) -> None:
        self._factory = container if callable(container) else (lambda: container)
        self._container: ContainerClient | None = None
        self._created = False
        self._lock = threading.Lock()

    def _client(self) -> ContainerClient:
        with self._lock:
            if self._container is None:
                self._container = self._factory()
            return self._container

    def _ensure_container(self, container: ContainerClient) -> None:
        if self._created:
            return
        with suppress(ResourceExistsError):
            container.create_container()
        self._created = True

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        container = self._client()
        with _translated("write", checked_key(key)):
            self._ensure_container(container)
            settings = ContentSettings(content_type=content_type)
            container.upload_blob(key, data, overwrite=True, content_settings=settings)
        return self.url(key)

    def get(self, key: str) -> bytes:
        with _translated("read", checked_key(key)):
            data: bytes = self._client().download_blob(key).readall()
        return data

    def url(self, key: str) -> str:
        return str(self._client().get_blob_client(checked_key(key)).url)
