"""The install has one import root: ``skinbatch`` (consumer/ and converter/ install under it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.fixtures.needs import need_module

ROOT = Path(__file__).resolve().parents[2]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed() -> None:
    cfg = _setuptools()
    mapped = {folder: name for name, folder in cfg["package-dir"].items()}
    on_disk = set()
    for init in ROOT.glob("*/**/__init__.py"):
        folder = init.parent.relative_to(ROOT)
        top = folder.parts[0]
        if top not in {"skinbatch", *mapped}:
            continue
        prefix = mapped.get(top, top)
        on_disk.add(".".join([prefix, *folder.parts[1:]]))
    assert set(cfg["packages"]) == on_disk


def test_the_wheel_installs_only_skinbatch(tmp_path: Path) -> None:
    need_module("setuptools", "building the wheel needs setuptools in this environment")
    # A copy, so that setuptools' build/ folder is not left in the working tree.
    src = tmp_path / "src"
    for name in ("skinbatch", "consumer", "converter"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("skinbatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"skinbatch"}
    assert "skinbatch/consumer/service.py" in names
    assert "skinbatch/converter/templates/ort_model.py.tmpl" in names
