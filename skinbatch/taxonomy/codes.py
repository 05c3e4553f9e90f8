"""Coded concepts for taxonomy nodes: a standard code where the taxonomy file gives one, else a stable
private code whose value is the node's name. Pure.

A node may carry ``"code": {"scheme": "SCT", "value": "254701007", "meaning": "Basal cell carcinoma of
skin"}``. ``scheme`` is a DICOM Coding Scheme Designator (PS3.16 §8): ``SCT`` (SNOMED CT), ``LN``
(LOINC), ``DCM`` (DICOM), or a private one starting with ``99``. The same code serves the DICOM SR and
FHIR (:attr:`ClassCode.fhir_system`).

A node without a code falls back to :func:`private_code`: scheme ``99SKINBATCH``, value the node's name.
The name is the node's identifier in the taxonomy, so the code does not change when nodes are added or
reordered (a positional code would).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from skinbatch.contract import ConfigurationError

PRIVATE_SCHEME = "99SKINBATCH"
"""Private coding scheme (PS3.16 §8.2: designators starting with "99" are local to their maker)."""

FHIR_SYSTEMS = {
    "SCT": "http://snomed.info/sct",
    "LN": "http://loinc.org",
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    "UCUM": "http://unitsofmeasure.org",
}
LOCAL_FHIR_SYSTEM = "urn:skinbatch:taxonomy-node"
"""FHIR ``system`` of the private codes. A URN rather than a URL: skinbatch owns no web address, and a
site that wants its own can rewrite this one system in its integration engine."""

MAX_MEANING = 64
"""Code Meaning is a DICOM LO: at most 64 characters."""


class CodeError(ConfigurationError):
    """A node's ``code`` is malformed."""


@dataclass(frozen=True)
class ClassCode:
    scheme: str
    """DICOM Coding Scheme Designator: SCT, LN, DCM, or 99… for private codes."""
    value: str
    meaning: str

    @property
    def is_private(self) -> bool:
        return self.scheme.startswith("99")

    @property
    def fhir_system(self) -> str:
        if self.is_private:
            return LOCAL_FHIR_SYSTEM
        try:
            return FHIR_SYSTEMS[self.scheme]
        except KeyError:
            raise CodeError(f"no FHIR system is known for coding scheme {self.scheme!r}") from None

    @property
    def dicom_meaning(self) -> str:
        """The meaning cut to fit DICOM's 64 characters (for display only: the value identifies)."""
        return self.meaning if len(self.meaning) <= MAX_MEANING else self.meaning[: MAX_MEANING - 1] + "…"

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}

    @classmethod
    def from_dict(cls, d: Any, where: str = "code") -> ClassCode:
        """Parse and check ``{"scheme", "value", "meaning"}``; ``where`` names the node in errors."""
        if not isinstance(d, Mapping):
            raise CodeError(f"{where}: 'code' must be an object with 'scheme', 'value' and 'meaning'")
        missing = [k for k in ("scheme", "value", "meaning") if not str(d.get(k) or "").strip()
                   or not isinstance(d.get(k), str)]
        if missing:
            raise CodeError(f"{where}: 'code' needs non-empty text in {', '.join(repr(k) for k in missing)}")
        extra = sorted(set(d) - {"scheme", "value", "meaning"})
        if extra:
            raise CodeError(f"{where}: 'code' has unknown keys {extra}; only scheme, value and meaning are read")
        code = cls(scheme=d["scheme"].strip(), value=d["value"].strip(), meaning=d["meaning"].strip())
        if not code.is_private and code.scheme not in FHIR_SYSTEMS:
            raise CodeError(
                f"{where}: coding scheme {code.scheme!r} is not one skinbatch knows (SCT, LN, DCM); "
                f"use one of those or a private scheme starting with '99'"
            )
        if code.scheme == "SCT" and not code.value.isdigit():
            raise CodeError(f"{where}: a SNOMED CT concept id is digits only, got {code.value!r}")
        if "\\" in code.value or any(ord(ch) < 32 for ch in code.value):
            raise CodeError(f"{where}: a code value may not hold backslashes or control characters")
        return code


def private_code(name: str) -> ClassCode:
    """The fallback for a node without a standard code: its name, in the private scheme.

    DICOM puts a value of up to 16 characters in Code Value (SH) and a longer one in Long Code Value
    (UC, PS3.3 §8.8); highdicom picks the attribute by length, so any name fits.
    """
    return ClassCode(scheme=PRIVATE_SCHEME, value=name, meaning=name)


def code_for(name: str, codes: Mapping[str, ClassCode | Mapping[str, str]] | None) -> ClassCode:
    """The code of the class ``name``: the one in ``codes`` (the model card's ``taxonomy.codes``, or
    :meth:`Taxonomy.codes`), else :func:`private_code`."""
    found = (codes or {}).get(name)
    if found is None:
        return private_code(name)
    return found if isinstance(found, ClassCode) else ClassCode.from_dict(found, where=name)
