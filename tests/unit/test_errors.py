"""One error root: every exception skinbatch raises on purpose is a ``skinbatch.contract.SkinbatchError``.

Callers (the CLIs, the consumer's loop, scripts) then catch one root and exit with its ``exit_code``, and
there is one class for each kind of fault: ``except ArchiveUnavailable`` must catch an archive that is
down wherever that was noticed.

Every module of the install is imported (``skinbatch`` and the ``consumer/`` and ``converter/`` folders
it maps to ``skinbatch.consumer`` and ``skinbatch.converter``); a module that needs a missing optional
dependency (torch for the converter, matplotlib for the plots) is skipped, any other import error fails.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

from skinbatch.contract import ArchiveUnavailable, ExitCode, SkinbatchError

ROOTS = ("skinbatch", "skinbatch.consumer", "skinbatch.converter")

# The extras in pyproject.toml; a module that imports one of them at import time is skipped without it.
OPTIONAL_DEPENDENCIES = frozenset({
    "matplotlib", "onnx", "onnxconverter_common", "onnxruntime", "pytriton", "tensorrt", "torch", "torchvision",
})

# Private exceptions used as control flow, which never reach a caller: caught in their own module.
CONTROL_FLOW = {
    "skinbatch.serve.cli._Shutdown": "raised by the signal handler to unwind start-up and the serving loop",
}


def _module_names() -> Iterator[str]:
    for root in ROOTS:
        package = importlib.import_module(root)
        yield root
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{root}."):
            if root == "skinbatch" and info.name.startswith(("skinbatch.consumer.", "skinbatch.converter.")):
                continue  # in a wheel they sit under skinbatch/; walked as roots of their own either way
            yield info.name


def _import(name: str) -> ModuleType | None:
    """The module, or None when it needs an optional dependency that is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL_DEPENDENCIES:
            return None
        raise


def _modules() -> list[ModuleType]:
    modules = [_import(name) for name in sorted(set(_module_names()))]
    return [module for module in modules if module is not None]


def _exception_classes(modules: list[ModuleType]) -> dict[str, type[BaseException]]:
    """Every exception class defined (not merely imported) in ``modules``, by its dotted name."""
    found = {}
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


@pytest.fixture(scope="module")
def classes() -> dict[str, type[BaseException]]:
    return _exception_classes(_modules())


def test_modules_are_found() -> None:
    names = set(_module_names())
    assert {"skinbatch.contract", "skinbatch.consumer.service", "skinbatch.converter.errors"} <= names
    assert all(name.startswith("skinbatch.") or name == "skinbatch" for name in names)


def test_every_error_derives_from_the_one_root(classes: dict[str, type[BaseException]]) -> None:
    outside = sorted(
        name for name, cls in classes.items()
        if not issubclass(cls, SkinbatchError) and name not in CONTROL_FLOW
    )
    assert not outside, (
        f"these exceptions do not derive from skinbatch.contract.SkinbatchError: {outside}. Derive them from "
        "it or from one of the contract's classes (ConfigurationError, InputRejected, ArchiveError, ...), "
        "keeping a builtin base (ValueError, RuntimeError) where callers catch that"
    )


def test_every_error_has_an_exit_code(classes: dict[str, type[BaseException]]) -> None:
    for name, cls in classes.items():
        if issubclass(cls, SkinbatchError):
            assert isinstance(cls.exit_code, ExitCode), name


def test_one_name_per_class() -> None:
    """Two classes of one name (there were two ``DriftReport``s) make every import and traceback ambiguous."""
    where: dict[str, set[str]] = {}
    for module in _modules():
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__:
                where.setdefault(obj.__qualname__, set()).add(f"{obj.__module__}.{obj.__qualname__}")
    shared = {name: sorted(paths) for name, paths in where.items() if len(paths) > 1}
    assert not shared, f"classes of the same name: {shared}; give each its own name"


def test_exactly_one_archive_unavailable(classes: dict[str, type[BaseException]]) -> None:
    named = {name for name, cls in classes.items() if cls.__name__ == "ArchiveUnavailable"}
    assert named == {"skinbatch.contract.ArchiveUnavailable"}

    from skinbatch.dicomweb.client import ArchiveUnavailable as from_client

    assert from_client is ArchiveUnavailable  # re-exported, not a copy
    assert ArchiveUnavailable.exit_code == ExitCode.ARCHIVE_DOWN


def test_the_exceptions_to_the_rule_still_exist(classes: dict[str, type[BaseException]]) -> None:
    for name in CONTROL_FLOW:
        assert name in classes, f"{name} is gone: remove it from CONTROL_FLOW"
