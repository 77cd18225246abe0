"""A fake of an azure-identity credential: hands out a fixed token and records every request for one."""

from __future__ import annotations

import threading
import time
from typing import Any

from azure.core.credentials import AccessToken


class FakeCredential:
    """Implements `azure.core.credentials.TokenCredential`; `token` may be changed to simulate a refresh."""

    def __init__(self, token: str = "fake-entra-token", lifetime_seconds: int = 3600) -> None:
        self.token = token
        self.lifetime_seconds = lifetime_seconds
        self.requests: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.requests.append(scopes)
            return AccessToken(self.token, int(time.time()) + self.lifetime_seconds)
