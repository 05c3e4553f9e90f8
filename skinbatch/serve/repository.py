"""Checks of a model repository made before Triton is started.

Triton reports most problems itself, and ``server.py`` turns its log into typed errors. These checks
cover what Triton reports badly: a missing folder (a one-line "failed to stat file") and a python model
without its ``model.py``, on which the python backend of Triton 2.51 hangs at start-up instead of failing.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ModelLoadError, RepositoryError

_BACKEND_RE = re.compile(r'^\s*backend\s*:\s*"([^"]+)"', re.MULTILINE)
_MODEL_FILENAME_RE = re.compile(r'^\s*default_model_filename\s*:\s*"([^"]+)"', re.MULTILINE)


def list_models(repository: Path) -> list[str]:
    """Names of the model folders in ``repository``; raise RepositoryError when there are none."""
    repository = Path(repository)
    if not repository.exists():
        raise RepositoryError(
            f"The model repository {repository} does not exist. Pass the folder that `skinbatch convert` "
            "wrote (one sub-folder per model, each with a config.pbtxt)."
        )
    if not repository.is_dir():
        raise RepositoryError(f"The model repository {repository} is not a folder.")
    models = sorted(p.name for p in repository.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        raise RepositoryError(
            f"The model repository {repository} is empty: Triton would start and serve nothing. "
            "Write a repository into it first (`skinbatch convert ...`)."
        )
    return models


def check_repository(repository: Path) -> list[str]:
    """Check the repository and return its model names.

    Raises:
        RepositoryError: missing, not a folder, or no model in it.
        ModelLoadError: a python model has a version folder without its model file.
    """
    models = list_models(repository)
    failures: dict[str, str] = {}
    for name in models:
        config = Path(repository) / name / "config.pbtxt"
        if not config.is_file():
            continue  # Triton may auto-complete a config; let it report.
        text = config.read_text(encoding="utf-8", errors="replace")
        backend = _BACKEND_RE.search(text)
        if backend is None or backend.group(1) != "python":
            continue
        filename_match = _MODEL_FILENAME_RE.search(text)
        filename = filename_match.group(1) if filename_match else "model.py"
        for version_dir in sorted(p for p in (Path(repository) / name).iterdir() if p.name.isdigit()):
            if not (version_dir / filename).is_file():
                failures[name] = (
                    f"python model without {version_dir.name}/{filename} "
                    f"(the python backend would hang at start-up instead of failing)"
                )
    if failures:
        raise ModelLoadError(failures)
    return models
