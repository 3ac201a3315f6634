"""The synthetic patient world: procedural patient photos with medical ground truth."""

from medeid.synth.cohort import Patient, cohort_rows, make_patient, patient_from_row, photo_rows, render_row
from medeid.synth.conditions import DISEASES, LATERALITIES, Condition, sample_condition
from medeid.synth.identity import SEXES, Identity, sample_identity
from medeid.synth.nuisance import Nuisance, sample_nuisance
from medeid.synth.render import Rendered, render

__all__ = [
    "DISEASES", "LATERALITIES", "SEXES", "Condition", "Identity", "Nuisance", "Patient", "Rendered",
    "cohort_rows", "make_patient", "patient_from_row", "photo_rows", "render", "render_row",
    "sample_condition", "sample_identity", "sample_nuisance",
]
