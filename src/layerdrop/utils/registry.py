"""Name -> class registries filled by decorators, so a new task or architecture registers itself in its
own module (fairseq's ``register_task`` / ``register_model``) instead of being added to a closed dict."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes registered under names. The modules of ``package`` are imported on the first lookup, so a
    class is found as soon as its module exists: nothing else lists it."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind, self.package = kind, package
        self._classes: dict[str, T] = {}
        self._imported = False

    def register(self, name: str) -> Callable[[T], T]:
        def add(cls: T) -> T:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is already registered to {self._classes[name]!r}")
            self._classes[name] = cls
            return cls

        return add

    def _import_package(self) -> None:
        if not self._imported:
            self._imported = True
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                importlib.import_module(f"{self.package}.{module.name}")

    def __contains__(self, name: str) -> bool:
        if name not in self._classes:
            self._import_package()
        return name in self._classes

    def __getitem__(self, name: str) -> T:
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._classes[name]

    def names(self) -> list[str]:
        self._import_package()
        return sorted(self._classes)

    def items(self) -> Iterator[tuple[str, T]]:
        self._import_package()
        return iter(sorted(self._classes.items()))
