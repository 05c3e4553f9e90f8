"""Find the Triton bundled in ``nvidia-pytriton`` and check that this machine can run it.

The wheel ships ``pytriton/tritonserver/`` (Triton 2.51: the server binary, the python backend, one
python-backend stub per Python minor version) and its shared libraries in ``nvidia_pytriton.libs/``.
We run that binary ourselves rather than through PyTriton, on a model repository of our own; the
layout below mirrors what PyTriton does in ``pytriton/triton.py`` and
``pytriton/server/triton_server.py``.

Why each check exists:

* glibc >= 2.35: the wheel's binaries were linked against it; older systems fail with an obscure
  loader error.
* the stub for *this* interpreter: the stub embeds CPython and links ``libpython3.X.so.1.0``; a stub of
  another minor version cannot import this environment's packages.
* ``LD_LIBRARY_PATH`` with the interpreter's ``LIBDIR``: without it the stub resolves ``libpython``
  through the system loader, which may find a distribution's libpython of another patch release (or
  none at all) instead of the interpreter whose packages it is about to import.
* the environment's ``bin`` first on ``PATH``: the embedded interpreter derives ``sys.prefix`` from the
  ``python3`` it finds there, and so decides which site-packages the models import from. It runs
  isolated, so PYTHONPATH does not reach the models; install what they import into the environment.
* numpy < 2: the stub of this Triton release was built against numpy 1. With numpy 2 the models load
  and report ready but every input tensor arrives empty, and nothing fails.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import (
    GlibcVersionError,
    NumpyVersionError,
    PythonStubNotFoundError,
    TritonBinaryNotFoundError,
)

MIN_GLIBC = (2, 35)
INSTALL_HINT = "Install it with `pip install 'skinbatch[serve]'` (nvidia-pytriton, numpy<2)."


@dataclass(frozen=True)
class TritonDistribution:
    """The files of the Triton bundled in ``nvidia-pytriton`` that a server start needs.

    Attributes:
        root: ``<site-packages>/pytriton/tritonserver``.
        binary: the ``tritonserver`` executable.
        libs_dir: ``<site-packages>/nvidia_pytriton.libs``, the wheel's vendored shared libraries.
        backend_library: ``backends/python/libtriton_python.so``.
        backend_utils: ``backends/python/triton_python_backend_utils.py``.
        stub: ``python_backend_stubs/<major.minor>/triton_python_backend_stub`` for this interpreter.
        cache_dir: ``caches``, for ``--cache-directory``.
    """

    root: Path
    binary: Path
    libs_dir: Path
    backend_library: Path
    backend_utils: Path
    stub: Path
    cache_dir: Path


def python_version_tag() -> str:
    """``major.minor`` of this interpreter, the name of the stub folder that matches it."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def locate_distribution() -> TritonDistribution:
    """Find the bundled Triton without importing ``pytriton`` (its import pulls in much more).

    Raises:
        TritonBinaryNotFoundError: ``nvidia-pytriton`` is not installed or is incomplete.
        PythonStubNotFoundError: it has no stub for this interpreter's Python version.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonBinaryNotFoundError(f"The package nvidia-pytriton is not installed. {INSTALL_HINT}")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    root = package_dir / "tritonserver"
    dist = TritonDistribution(
        root=root,
        binary=root / "bin" / "tritonserver",
        # Wheel installs keep the vendored libraries next to the package (PyTriton's get_libs_path).
        libs_dir=package_dir.parent / "nvidia_pytriton.libs",
        backend_library=root / "backends" / "python" / "libtriton_python.so",
        backend_utils=root / "backends" / "python" / "triton_python_backend_utils.py",
        stub=root / "python_backend_stubs" / python_version_tag() / "triton_python_backend_stub",
        cache_dir=root / "caches",
    )
    for path in (dist.binary, dist.libs_dir, dist.backend_library, dist.backend_utils, dist.cache_dir):
        if not path.exists():
            raise TritonBinaryNotFoundError(
                f"nvidia-pytriton is installed at {package_dir} but {path.relative_to(package_dir.parent)} "
                f"is missing; the install is incomplete or is an editable checkout without binaries. "
                f"Reinstall it: `pip install --force-reinstall nvidia-pytriton`."
            )
    if not os.access(dist.binary, os.X_OK):
        raise TritonBinaryNotFoundError(f"{dist.binary} is not executable; reinstall nvidia-pytriton.")
    if not dist.stub.is_file():
        stubs_dir = root / "python_backend_stubs"
        available = sorted(p.name for p in stubs_dir.iterdir()) if stubs_dir.is_dir() else []
        raise PythonStubNotFoundError(
            f"nvidia-pytriton has no python-backend stub for Python {python_version_tag()} "
            f"(it ships {', '.join(available) or 'none'}). Run skinbatch with one of those Python versions."
        )
    return dist


def glibc_version() -> tuple[int, int] | None:
    """The running C library's glibc version, or None when it is not glibc (e.g. musl)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        return None
    name, _, version = text.partition(" ")
    if name != "glibc":
        return None
    major, _, minor = version.partition(".")
    try:
        return int(major), int(minor.split(".")[0])
    except ValueError:
        return None


def check_glibc(minimum: tuple[int, int] = MIN_GLIBC) -> tuple[int, int]:
    """Return the glibc version; raise GlibcVersionError when it is missing or older than ``minimum``."""
    found = glibc_version()
    wanted = ".".join(map(str, minimum))
    if found is None:
        raise GlibcVersionError(
            f"The Triton bundled in nvidia-pytriton needs glibc >= {wanted}, and this system's C library "
            "is not glibc. Use a glibc-based image (Debian 12, Ubuntu 22.04 or newer)."
        )
    if found < minimum:
        raise GlibcVersionError(
            f"The Triton bundled in nvidia-pytriton needs glibc >= {wanted}; this system has "
            f"{found[0]}.{found[1]}. Use a newer base image (Debian 12, Ubuntu 22.04 or newer)."
        )
    return found


def python_libdir() -> Path:
    """The folder holding this interpreter's ``libpython3.X.so.1.0``, which the stub links against.

    Raises:
        PythonStubNotFoundError: the interpreter was built without a shared libpython.
    """
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{python_version_tag()}.so.1.0"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not (libdir / soname).exists():
        raise PythonStubNotFoundError(
            f"The python-backend stub links against {soname}, but this interpreter ({sys.executable}) "
            f"has no shared libpython in {libdir}. Use a Python built with --enable-shared "
            "(pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ...; Debian/Ubuntu and "
            "python.org builds already are)."
        )
    return libdir


def environment_bin_dir() -> Path:
    """The ``bin`` folder of the environment the models' imports must come from (this venv)."""
    bin_dir = Path(sys.prefix) / "bin"
    if not (bin_dir / "python3").exists():
        raise PythonStubNotFoundError(
            f"{bin_dir / 'python3'} does not exist; the python-backend stub finds its environment through "
            "the `python3` first on PATH. Run skinbatch from a virtual environment or a full Python install."
        )
    return bin_dir


def build_env(dist: TritonDistribution, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``tritonserver`` and, through it, for the python-backend stubs."""
    env = dict(os.environ if base is None else base)
    # Ours first: a user's LD_LIBRARY_PATH may hold another libpython or another Triton's libraries.
    lib_path = [str(dist.libs_dir), str(python_libdir())]
    if env.get("LD_LIBRARY_PATH"):
        lib_path.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path)
    env["PATH"] = os.pathsep.join(p for p in (str(environment_bin_dir()), env.get("PATH", "")) if p)
    return env


def stub_numpy_version(env: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """The numpy version the stub will import, asked of the ``python3`` the stub will find on PATH.

    The stub embeds an *isolated* interpreter (``sys.flags.isolated == 1``): it ignores PYTHONPATH
    and the user site, and reads only the environment's site-packages (``.pth`` files included).
    ``python3 -I`` sees the same. Returns None when numpy is not importable there.
    """
    python = environment_bin_dir() / "python3"
    code = "import numpy, sys; sys.stdout.write(numpy.__version__)"
    result = subprocess.run(  # noqa: S603 - the stub's own interpreter
        [str(python), "-I", "-c", code],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return None
    return result.stdout.strip()


def check_numpy(env: Mapping[str, str], cwd: Path | None = None) -> str:
    """Return the numpy version the stub will import; refuse numpy >= 2 or no numpy at all."""
    version = stub_numpy_version(env, cwd)
    if version is None:
        raise NumpyVersionError(
            f"numpy is not importable from {sys.prefix}, but the python backend needs it. "
            "Install it: `pip install 'numpy<2'`."
        )
    major = version.split(".")[0]
    if not major.isdigit() or int(major) >= 2:
        raise NumpyVersionError(
            f"The python-backend stub would import numpy {version}. The stub of Triton 2.51 was built "
            "against numpy 1: with numpy 2 the models load and report ready, but every input tensor "
            "arrives empty and nothing fails. Install numpy 1 in this environment: `pip install 'numpy<2'`."
        )
    return version


def check_environment(base_env: Mapping[str, str] | None = None) -> tuple[TritonDistribution, dict[str, str]]:
    """Run every check and return the distribution and the environment to start the server with.

    Raises:
        TritonEnvironmentError: one of its subclasses, with what to do about it.
    """
    check_glibc()
    dist = locate_distribution()
    env = build_env(dist, base_env)
    check_numpy(env, cwd=dist.root)
    return dist, env


def prepare_backends(dist: TritonDistribution, work_dir: Path) -> Path:
    """Assemble ``<work_dir>/backends/python`` and return ``<work_dir>/backends``.

    The backend folder must hold the stub of *this* Python next to ``libtriton_python.so``, which is
    why it is assembled per interpreter instead of pointing Triton at the wheel's folder (where no stub
    sits). PyTriton does the same in its workspace.
    """
    backends = Path(work_dir) / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (dist.backend_library, dist.backend_utils, dist.stub):
        target = python_dir / source.name
        if not _same_file_content(source, target):
            shutil.copy2(source, target)
    return backends


def _same_file_content(source: Path, target: Path) -> bool:
    # Size and mtime are enough: copy2 keeps the mtime, and a reinstalled wheel changes it.
    if not target.exists():
        return False
    a, b = source.stat(), target.stat()
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)
