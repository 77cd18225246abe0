"""Services: what the composition root hands to handlers, finalize and submit preparation, found by type.

Handlers are plain functions and job definitions are built without arguments, so whatever they need beyond
their parameters (a warehouse connection factory, settings, a report store) reaches them here, per runtime:
`context.services.get(WarehouseServices)`. Nothing is global; each composition root builds its own.
"""

from __future__ import annotations

from typing import TypeVar, cast

from core.errors import ConfigurationError

T = TypeVar("T")


class Services:
    """Objects by type; at most one of each type."""

    __slots__ = ("_items",)

    def __init__(self, *items: object) -> None:
        self._items: dict[type, object] = {}
        for item in items:
            if type(item) in self._items:
                raise ConfigurationError(f"two services of type {type(item).__name__}")
            self._items[type(item)] = item

    def get(self, kind: type[T]) -> T:
        """The service of type `kind` (or a subclass); a `ConfigurationError` naming it when there is none."""
        item = self._items.get(kind)
        if item is None:
            item = next((v for v in self._items.values() if isinstance(v, kind)), None)
        if item is None:
            raise ConfigurationError(
                f"no {kind.__name__} service: the composition root must provide one (Services(...))"
            )
        return cast(T, item)

    def __contains__(self, kind: object) -> bool:
        return isinstance(kind, type) and any(isinstance(v, kind) for v in self._items.values())
