"""How the Service Bus SDK client is built: from a connection string, or from a namespace and an Azure identity."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infrastructure.identity import azure_credential
from infrastructure.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.servicebus import ServiceBusClient

CredentialFactory = Callable[[str | None], "TokenCredential"]


@dataclass(frozen=True, slots=True)
class ServiceBusAccess:
    """A connection string (shared access key), or a fully qualified namespace reached with a managed identity
    (`client_id` names a user-assigned one; None means DefaultAzureCredential's chain)."""

    connection_string: str | None = None
    namespace: str | None = None
    client_id: str | None = None

    def __post_init__(self) -> None:
        if not (self.connection_string or self.namespace):
            raise ValueError("Service Bus access needs a connection string or a fully qualified namespace")

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceBusAccess:
        """The connection string when one is set (as the Functions host does), else the namespace and identity."""
        if settings.servicebus_connection:
            return cls(connection_string=settings.servicebus_connection)
        return cls(namespace=settings.servicebus_namespace, client_id=settings.servicebus_identity_client_id)

    @property
    def uses_identity(self) -> bool:
        return not self.connection_string


def build_client(
    access: ServiceBusAccess, credential_factory: CredentialFactory = azure_credential
) -> ServiceBusClient:
    """The SDK client for `access`; `credential_factory(client_id)` makes the credential of an identity."""
    from azure.servicebus import ServiceBusClient

    if access.connection_string:
        return ServiceBusClient.from_connection_string(access.connection_string)
    assert access.namespace is not None  # __post_init__: one of the two is set
    return ServiceBusClient(access.namespace, credential_factory(access.client_id))


def build_admin_client(access: ServiceBusAccess, credential_factory: CredentialFactory = azure_credential) -> Any:
    """The SDK's management client for `access` (queue runtime properties). Its calls need Manage rights: a
    connection string of a policy with Manage, or the identity in the "Azure Service Bus Data Owner" role."""
    from azure.servicebus.management import ServiceBusAdministrationClient

    if access.connection_string:
        return ServiceBusAdministrationClient.from_connection_string(access.connection_string)
    assert access.namespace is not None
    return ServiceBusAdministrationClient(access.namespace, credential_factory(access.client_id))
