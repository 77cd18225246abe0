"""Azure identity: the one credential a process uses for Service Bus, PostgreSQL (Entra ID) and Storage.

A user-assigned managed identity is named by its client id; without one, `DefaultAzureCredential` tries, in order,
environment variables, workload identity, a system-assigned managed identity and a developer's `az login`. Tokens
are cached and refreshed by azure-identity itself, so asking for one per new connection is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

POSTGRES_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
"""The scope of Azure Database for PostgreSQL's Entra ID tokens (used as the connection password)."""


def azure_credential(client_id: str | None = None) -> TokenCredential:
    """The managed identity `client_id` names, or `DefaultAzureCredential`'s chain when it is None."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    return DefaultAzureCredential()


def postgres_password(credential: TokenCredential) -> str:
    """A current Entra ID access token for PostgreSQL: the password of a new connection."""
    return credential.get_token(POSTGRES_SCOPE).token
