"""Clinical archives over DICOMweb (DICOM PS3.18): references by UID, retrieval, search, SR write-back.

* ``references``: parse ``{"study": ..., "series": ..., "instance": ...}`` or ``dicomweb:`` URIs (pure);
* ``client``: QIDO-RS / WADO-RS / STOW-RS through ``dicomweb-client``, errors sorted into retry vs
  bad input;
* ``sr``: the scores of an image as a Comprehensive SR, with derived (idempotent) UIDs (highdicom);
* ``orthanc``: a local Orthanc PACS for the demo and the tests.

Modules are imported on use: the consumer without ``--dicomweb-url`` never loads the HTTP or SR code.
"""

from .references import DicomWebReference, InvalidReference, is_dicomweb_document, parse_document, parse_uri

__all__ = ["DicomWebReference", "InvalidReference", "is_dicomweb_document", "parse_document", "parse_uri"]
