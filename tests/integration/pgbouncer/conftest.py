"""Fixtures running the engine through a real PgBouncer in transaction mode, authenticated with an Entra-style token.

The session's PgBouncer fronts the session's PostgreSQL; each test's database (cloned from the migrated template)
is reached through it. Clients log in with a token from a fake credential (PgBouncer checks it with SCRAM), as the
app does on Azure with its managed identity. A missing pgbouncer program is an error that says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from infrastructure.postgres import database as database_module
from infrastructure.settings import Settings
from tests.conftest import PostgresServer
from tests.fakes.azure_identity import FakeCredential
from tests.pgbouncer import PgBouncer, running_pgbouncer


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    with running_pgbouncer(postgres_server.admin_url) as bouncer:
        yield bouncer


@pytest.fixture
def credential(pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch) -> FakeCredential:
    """The identity every `Database` of the test gets: its token is the password PgBouncer expects."""
    fake = FakeCredential(token=pgbouncer.password)
    monkeypatch.setattr(database_module, "azure_credential", lambda client_id=None: fake)
    return fake


@pytest.fixture
def bouncer_url(database_url: str, pgbouncer: PgBouncer) -> str:
    """This test's database, through PgBouncer (no password in the URL: the token is the password)."""
    return pgbouncer.url(str(conninfo_to_dict(database_url)["dbname"]))


@pytest.fixture
def settings(bouncer_url: str, credential: FakeCredential, tmp_path: Path) -> Settings:
    """Everything through PgBouncer in transaction mode, Entra ID auth, no direct URL (so workers poll)."""
    return Settings.for_tests(
        database_url=bouncer_url, database_pgbouncer=True, database_auth="entra", azure_client_id="test-identity",
        data_dir=tmp_path, reports_dir=tmp_path / "reports", lock_seconds=2.0,
    )
