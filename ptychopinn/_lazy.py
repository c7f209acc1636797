"""Lazy package exports (PEP 562), shared by every package `__init__` of ptychopinn.

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"load_scan": "scan", ...})

A table value is a submodule of the package ("scan" or ".scan") or an absolute
"package.module:attribute". Nothing is imported until a name is first used, which keeps
`import ptychopinn` and the torch-free parts (data, interop readers, ONNX runner) light.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Callable, Mapping


def _resolve(package: str, target: str, name: str) -> Any:
    if ":" in target:
        module_name, attr = target.split(":", 1)
    else:
        module_name, attr = f"{package}.{target.lstrip('.')}", name
    return getattr(importlib.import_module(module_name), attr)


def lazy_exports(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package` exporting `table`'s names lazily."""
    names = sorted(table)

    def __getattr__(name: str) -> Any:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = _resolve(package, target, name)
        setattr(sys.modules[package], name, value)  # cache: later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__, names


class _CallableModule(types.ModuleType):
    """A package that can also be called as its main function (see `make_callable`)."""

    __main_function__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__main_function__)(*args, **kwargs)


def make_callable(package: str, function: str) -> None:
    """Let `ptychopinn.<package>(...)` call `<package>.<function>(...)`.

    `ptychopinn.train` is both a subpackage and the function `pp.train(...)`: once the subpackage
    is imported Python binds the attribute on `ptychopinn` to the package object, so the package
    itself must be callable for `pp.train(...)` to keep working.
    """
    module = sys.modules[package]
    module.__class__ = _CallableModule
    module.__main_function__ = function  # type: ignore[attr-defined]
