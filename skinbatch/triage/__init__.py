"""Archive triage: walk folders (DICOM, JPEG, PNG, WebP, TIFF, HEIC, AVIF, DICOMDIR), score every frame on Triton, rank.

``walk`` finds files, ``decode`` turns one into model input in a worker process, ``run`` drives decoding
and many concurrent Triton requests, ``state`` keeps the resumable results (keyed by content sha256),
``report`` writes the CSV and the HTML report, ``cli`` is ``skinbatch triage``.
"""

from .run import Runner, RunOptions, RunSummary
from .state import STATE_FILE, TriageStore
from .walk import Discovery, discover

__all__ = ["STATE_FILE", "Discovery", "RunOptions", "RunSummary", "Runner", "TriageStore", "discover"]
