"""The libraries whose internals the code touches have upper bounds, and what is installed, what the
images install (constraints.txt, compose/constraints-converter.txt) all lie within them.

kafka-python: skinbatch/connect/kafka_reads.py replaces its transports' socket reads. dicomweb-client:
skinbatch/dicomweb/client.py calls its private ``_http_get`` and ``_decode_multipart_message``. A new
minor version of either may change those; the bound is raised after trying it, not by chance.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
BOUNDED = ("kafka-python", "dicomweb-client")


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    reqs = (Requirement(r) for r in listed)
    return {canonicalize_name(r.name): r for r in reqs if not r.name.startswith("skinbatch")}


def pins(path: Path) -> dict[str, Version]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, pinned = line.partition("==")
            out[canonicalize_name(name)] = Version(pinned)
    return out


def outside(installed: str, specifier: SpecifierSet) -> bool:
    return not specifier.contains(installed, prereleases=True)


@pytest.mark.parametrize("name", BOUNDED)
def test_the_bound_exists_and_holds_what_is_installed(name: str) -> None:
    specifier = requirements()[name].specifier
    uppers = [s for s in specifier if s.operator in ("<", "<=", "~=", "==")]
    assert uppers, f"{name} has no upper bound in pyproject.toml"
    installed = version(name)
    assert not outside(installed, specifier), (
        f"{name} {installed} is outside {specifier}: try it (the system tests), then raise the bound in pyproject.toml")


@pytest.mark.parametrize("name", BOUNDED)
def test_a_version_past_the_bound_is_refused(name: str) -> None:
    specifier = requirements()[name].specifier
    upper = min(Version(s.version) for s in specifier if s.operator == "<")
    assert outside(str(upper), specifier) and outside(f"{upper.major + 1}.0", specifier)


@pytest.mark.parametrize("constraints", ["constraints.txt", "compose/constraints-converter.txt"])
def test_the_images_pins_fit_pyproject(constraints: str) -> None:
    pinned = pins(ROOT / constraints)
    for name, req in requirements().items():
        if name in pinned:
            fits = req.specifier.contains(pinned[name], prereleases=True)
            assert fits, f"{constraints}: {name}=={pinned[name]} vs {req}"
    for name in BOUNDED:
        assert name in pinned, f"{constraints} does not pin {name}"


def test_the_converter_constraints_fit_nvidias_base() -> None:
    """Every requirement of the converter's install is pinned; not the dev machines' CUDA 13 torch;
    no TensorRT (the image's own is used)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["convert"]
    needed = {canonicalize_name(Requirement(r).name) for r in listed}
    pinned = pins(ROOT / "compose" / "constraints-converter.txt")
    assert needed <= set(pinned), f"not pinned: {sorted(needed - set(pinned))}"
    assert "tensorrt" not in pinned
    assert not [n for n in pinned if n.endswith("-cu13") or n == "cuda-toolkit"], "a CUDA 13 wheel in the converter"
    assert [n for n in pinned if n.endswith("-cu12")], "torch's CUDA 12 libraries are missing"
    assert pinned["torch"] != pins(ROOT / "constraints.txt")["torch"]
