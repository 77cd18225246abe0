"""Task handler registry: `@register_task("name")` on plain functions, discovered by importing a package."""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from core.errors import ConfigurationError, UnknownTaskType
from core.services import Services

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler knows about the call it serves.

    `cancelled` turns true when the handler should stop early: its job was cancelled or failed, the attempt
    ran past its time limit, or its lease was lost. It is a cheap check (an in-memory flag the worker's
    heartbeat sets); a long handler should look at it between steps and return or raise when it is set.
    """

    job_id: str
    job_type: str
    stage: int
    task_id: str
    index: int
    attempt: int
    max_attempts: int
    services: Services = field(default_factory=Services)
    stop: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    @property
    def cancelled(self) -> bool:
        return self.stop.is_set()


class TaskHandler(Protocol):
    def __call__(self, params: JSONDict, context: TaskContext) -> JSONDict | None: ...


@dataclass
class TaskRegistry:
    """Names to handlers. Registering one name twice is a start-up error."""

    _handlers: dict[str, TaskHandler] = field(default_factory=dict)

    def register(self, name: str, handler: TaskHandler) -> None:
        existing = self._handlers.get(name)
        if existing is not None and existing is not handler:
            raise ConfigurationError(
                f"task type {name!r} has two handlers: {_where(existing)} and {_where(handler)}"
            )
        self._handlers[name] = handler

    def get(self, name: str) -> TaskHandler:
        try:
            return self._handlers[name]
        except KeyError:
            raise UnknownTaskType(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    @property
    def handlers(self) -> Mapping[str, TaskHandler]:
        return MappingProxyType(self._handlers)

    def without(self, *names: str) -> TaskRegistry:
        """A copy lacking some handlers (an older worker build, in drills and tests)."""
        return TaskRegistry({k: v for k, v in self._handlers.items() if k not in names})


_DECLARED: list[tuple[str, TaskHandler]] = []


def register_task(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a task handler. The declaration is collected by `discover_tasks`; nothing global is mutated
    beyond the declaration list, so every composition root builds its own registry."""

    if not name or not name.replace("_", "").replace(".", "").replace("-", "").isalnum():
        raise ConfigurationError(f"invalid task type name {name!r}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        _DECLARED.append((name, fn))
        fn.task_type = name  # type: ignore[attr-defined]
        return fn

    return decorate


def import_package(package: str) -> None:
    """Import every module under `package`, so their decorators run."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=f"{package}."):
        importlib.import_module(info.name)


def discover_tasks(*packages: str) -> TaskRegistry:
    """Import every module under the packages and build a registry of the handlers they declare."""
    for package in packages:
        import_package(package)
    registry = TaskRegistry()
    for name, fn in _DECLARED:
        if in_packages(fn.__module__, packages):
            registry.register(name, fn)
    return registry


def in_packages(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def _where(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
