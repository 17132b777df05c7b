"""The route table's source: components registered by service name, and their handlers,
discovered from the type annotations of their public ``(self, session, msg)`` methods.

The :class:`~trionano.Component` base class lives with the server it belongs to
(``_server.py``); any object can be registered here.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Final

import attrs

from ._errors import ComponentError, SerializeError
from ._serializer import Serializer, Unmarshal
from ._session import Session

__all__ = ["LIFECYCLE_HOOKS", "Components", "Handler"]

#: Method names a component may define as lifecycle hooks (never routes).
LIFECYCLE_HOOKS: Final = ("init", "after_init", "before_shutdown", "shutdown")
_NOT_ROUTES: Final = frozenset({*LIFECYCLE_HOOKS, "server"})


@attrs.frozen
class Handler:
    """One discovered handler."""

    service: str
    method: str
    route: str
    func: Callable[[Session, Any], Any]  # bound
    is_async: bool
    annotation: object
    lane: str

    def unmarshaller(self, serializer: Serializer) -> Unmarshal:
        return serializer.unmarshaller(self.annotation)


@attrs.frozen
class _Registration:
    component: object
    service: str
    handlers: tuple[Handler, ...]


def _discover(component: object, service: str, name_func: Callable[[str], str], lane: str) -> list[Handler]:
    handlers = []
    cls = type(component)
    for attr in dir(cls):
        if attr.startswith("_") or attr in _NOT_ROUTES:
            continue
        func = getattr(cls, attr)
        if not inspect.isfunction(func):
            continue
        params = list(inspect.signature(func).parameters.values())
        if len(params) != 3 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
            continue
        try:
            hints = typing.get_type_hints(func)
        except Exception as exc:
            raise ComponentError(f"cannot resolve the annotations of {cls.__name__}.{attr}: {exc}") from None
        session_type = hints.get(params[1].name)
        if session_type is None:
            # (self, a, b) without annotations looks like a handler that would silently not be one
            raise ComponentError(
                f"{cls.__name__}.{attr}({params[1].name}, {params[2].name}) has no annotations, so it is not a route: "
                f"annotate {params[1].name} as trionano.Session and {params[2].name} with the message type "
                f"(bytes, dict, an attrs class, a dataclass, a betterproto message), or make the method private"
            )
        if not (isinstance(session_type, type) and issubclass(session_type, Session)):
            continue  # (self, x: NotASession, y): a helper, as nano skips it
        handlers.append(
            Handler(
                service=service,
                method=attr,
                route=f"{service}.{name_func(attr)}",
                func=getattr(component, attr),
                is_async=inspect.iscoroutinefunction(func),
                annotation=hints.get(params[2].name, Any),
                lane=lane,
            )
        )
    return handlers


class Components:
    """The ordered set of components a server runs (nano's ``component.Components``)."""

    def __init__(self) -> None:
        self._registrations: list[_Registration] = []

    def register(
        self,
        component: object,
        *,
        name: str | None = None,
        name_func: Callable[[str], str] | None = None,
        lane: str | None = None,
    ) -> None:
        """Register ``component`` as service ``name`` (default: its class name).

        ``name_func`` renames each handler (e.g. ``str.lower``); ``lane`` runs its handlers on
        that named scheduler lane instead of the main one (nano's ``WithSchedulerName``): if a
        session holds a :class:`~trionano.nursery_scheduler.Lane` under that name, that lane.

        Raises ComponentError: ``handler: service already defined: <name>``, or ``type <Name>
        has no exported methods of suitable type``.
        """
        service = name or type(component).__name__
        if not service or "." in service:
            raise ComponentError(f"no service name for type {type(component).__name__}: {service!r}")
        if any(r.service == service for r in self._registrations):
            raise ComponentError(f"handler: service already defined: {service}")
        handlers = _discover(component, service, name_func or (lambda method: method), lane or "")
        if not handlers:
            raise ComponentError(f"type {type(component).__name__} has no exported methods of suitable type")
        routes = [h.route for h in handlers]
        if len(set(routes)) != len(routes):
            raise ComponentError(f"name_func maps two handlers of {service} to one route: {sorted(routes)}")
        self._registrations.append(_Registration(component, service, tuple(handlers)))

    @property
    def components(self) -> list[object]:
        """The registered components, in registration order (a new list)."""
        return [r.component for r in self._registrations]

    @property
    def services(self) -> list[str]:
        """The registered service names, sorted."""
        return sorted(r.service for r in self._registrations)

    def handlers(self) -> list[Handler]:
        """Every discovered handler, by component in registration order."""
        return [h for r in self._registrations for h in r.handlers]

    def resolve(self, serializer: Serializer) -> dict[str, tuple[Handler, Unmarshal]]:
        """route -> (handler, body decoder). Raises ComponentError for an undecodable type."""
        table = {}
        for handler in self.handlers():
            try:
                table[handler.route] = (handler, handler.unmarshaller(serializer))
            except SerializeError as exc:
                raise ComponentError(f"{handler.route}: {exc}") from None
        return table
