"""Plugin registries: a dict filled by a decorator, plus entry points for outside packages.

A plugin's name is written once, in its decorator (``@methods.register("srpo")``). Built-ins are
found by importing every module of their folder (``methods/``, ``tasks/``, ...), so adding one
means adding one file. Another distribution adds plugins through the entry-point group
``harness.<kind>``: the entry point may name a module (whose decorators register on import) or an
object, which is registered under the entry point's name if its module did not register it.

A plugin is checked when it registers (``check``: for methods, the method contract), and a broken
outside plugin fails alone: a warning naming its distribution, unless it is the one asked for.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from harness.errors import HarnessError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtin_package: str, check: str | None = None):
        self.kind = kind  # "methods", "tasks", "judges" or "engines"
        self.builtin_package = builtin_package  # folder whose modules are the built-ins
        self.check = check  # "module:function" run on each plugin as it registers, or None
        self.entry_point_group = f"harness.{kind}"
        self._items: dict[str, T] = {}
        self._broken: dict[str, str] = {}  # entry-point name -> why it failed to load
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` on a class or factory."""

        def decorator(obj: T) -> T:
            existing = self._items.get(name)
            if existing is not None and existing is not obj and _qualname(existing) != _qualname(obj):
                raise HarnessError(
                    f"{self.kind[:-1]} name {name!r} is registered twice: by {_qualname(existing)} "
                    f"and by {_qualname(obj)}; rename one of them"
                )
            if self.check:
                module, _, function = self.check.partition(":")
                getattr(importlib.import_module(module), function)(obj, name)
            self._items[name] = obj
            try:
                obj.registered_name = name  # lets an object say its own name without a second copy
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.builtin_package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.builtin_package}.{module.name}")
        for ep in entry_points(group=self.entry_point_group):
            try:
                obj = ep.load()
                if not _is_module(obj) and obj not in self._items.values():
                    self.register(ep.name)(obj)
            except Exception as exc:  # a broken plugin must not hide the others
                dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
                why = f"the {self.entry_point_group} entry point {ep.name!r} ({ep.value}) of {dist} failed to load: {type(exc).__name__}: {exc}"
                self._broken[ep.name] = why
                sys.stderr.write(f"warning: {why}; its plugins are unavailable\n")

    def get(self, name: str) -> T:
        self._load()
        if name in self._items:
            return self._items[name]
        if name in self._broken:
            raise HarnessError(self._broken[name])
        known = sorted(self._items)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(
            f"unknown {self.kind[:-1]} {name!r}{hint} (known {self.kind}: {', '.join(known)})"
        )

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        return iter(sorted(self._items.items()))


def _is_module(obj: Any) -> bool:
    return type(obj).__name__ == "module"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


methods: Registry = Registry("methods", "harness.methods", check="harness.method:check_method_class")
tasks: Registry = Registry("tasks", "harness.tasks")
judges: Registry = Registry("judges", "harness.judges")
engines: Registry = Registry("engines", "harness.engines")

REGISTRIES = {r.kind: r for r in (methods, tasks, judges, engines)}
