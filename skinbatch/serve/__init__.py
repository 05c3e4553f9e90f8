"""Run the real Triton server bundled in ``nvidia-pytriton`` on the CPU, on a model repository of ours.

The only backend in that bundle is python (ensembles are built into the core); see
``environment.py`` for what the bundled binary needs from the machine.
"""

from .config import TritonServerConfig
from .environment import TritonDistribution, check_environment
from .errors import (
    GlibcVersionError,
    ModelLoadError,
    NumpyVersionError,
    PortInUseError,
    PythonStubNotFoundError,
    RepositoryError,
    ServeError,
    ServerNotRunningError,
    ServerStartError,
    StartupTimeoutError,
    TritonBinaryNotFoundError,
    TritonEnvironmentError,
)
from .server import LocalTriton

__all__ = [
    "GlibcVersionError",
    "LocalTriton",
    "ModelLoadError",
    "NumpyVersionError",
    "PortInUseError",
    "PythonStubNotFoundError",
    "RepositoryError",
    "ServeError",
    "ServerNotRunningError",
    "ServerStartError",
    "StartupTimeoutError",
    "TritonBinaryNotFoundError",
    "TritonDistribution",
    "TritonEnvironmentError",
    "TritonServerConfig",
    "check_environment",
]
