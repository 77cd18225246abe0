"""Queue depth on Service Bus for the `coremachine.queue.depth` metric: the management API's runtime properties.

One cheap management call per queue (message counts only, nothing received or peeked), made when metrics are
collected. Those calls need Manage rights; without them the metric is simply absent: the first failure is
logged once and no further call is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)


class ServiceBusQueueDepths:
    """Callable answering {logical queue: active messages} (scheduled ones are not yet due and not counted)."""

    def __init__(self, admin_factory: Callable[[], Any], entities: Mapping[str, str]) -> None:
        self._factory = admin_factory
        self._entities = dict(entities)
        self._admin: Any = None
        self._disabled = False
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, int]:
        with self._lock:
            if self._disabled:
                return {}
            try:
                if self._admin is None:
                    self._admin = self._factory()
                return {
                    queue: int(self._admin.get_queue_runtime_properties(entity).active_message_count)
                    for queue, entity in self._entities.items()
                }
            except Exception as exc:
                self._disabled = True
                log.warning("queue depth unavailable (needs Manage rights on the namespace); metric disabled",
                            extra={"error": f"{type(exc).__name__}: {exc}"[:500]})
                return {}
