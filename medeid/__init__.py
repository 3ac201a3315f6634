"""medeid: medical-scene face de-identification on Ray.

Builds MeMa (a synthetic patient-face dataset re-generated from real patient photos), trains
MedSem-DeID (reversible, medical-semantics-preserving de-identification), and applies it to
hospital archives and online requests. See README.md.
"""

__version__ = "0.1.0"
