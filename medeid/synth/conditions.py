"""Medical conditions of the synthetic world: six periocular diseases with laterality and severity.

Laterality is the patient's side: the patient's right eye appears on the image's left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

HEALTHY = "healthy"
PTOSIS = "ptosis"
THYROID_EYE_DISEASE = "thyroid_eye_disease"
STRABISMUS = "strabismus"
CONJUNCTIVAL_REDNESS = "conjunctival_redness"
PERIOCULAR_TUMOUR = "periocular_tumour"

DISEASES = (HEALTHY, PTOSIS, THYROID_EYE_DISEASE, STRABISMUS, CONJUNCTIVAL_REDNESS, PERIOCULAR_TUMOUR)
LATERALITIES = ("none", "right", "left", "bilateral")
SEVERITIES = (0, 1, 2, 3)  # 0 only for healthy: mild, moderate, severe otherwise
TUMOUR_SITES = ("lower_lid", "medial_canthus", "lateral_canthus", "upper_lid")

# Which sides each disease can take; strabismus and tumours are one-sided here.
_ALLOWED_LATERALITY = {
    HEALTHY: ("none",),
    PTOSIS: ("right", "left", "bilateral"),
    THYROID_EYE_DISEASE: ("right", "left", "bilateral"),
    STRABISMUS: ("right", "left"),
    CONJUNCTIVAL_REDNESS: ("right", "left", "bilateral"),
    PERIOCULAR_TUMOUR: ("right", "left"),
}


@dataclass(frozen=True)
class Condition:
    """What a patient's eyes show. `variant` and the tumour fields are 0/'' where unused."""

    disease: str = HEALTHY
    laterality: str = "none"
    severity: int = 0
    variant: str = ""  # strabismus: "esotropia" | "exotropia"
    tumour_site: str = ""
    tumour_angle: float = 0.0  # where on the site the lesion sits, radians
    pattern_seed: int = 0  # shape of a lesion, layout of vessels

    def __post_init__(self):
        if self.disease not in DISEASES:
            raise ValueError(f"unknown disease {self.disease!r}; expected one of {DISEASES}")
        if self.laterality not in _ALLOWED_LATERALITY[self.disease]:
            raise ValueError(f"laterality {self.laterality!r} is not possible for {self.disease}")
        if (self.severity == 0) != (self.disease == HEALTHY) or self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity} is not possible for {self.disease}")

    def affects(self, side: str) -> bool:
        """Whether the patient's `side` ('right' or 'left') eye shows the condition."""
        return self.laterality in (side, "bilateral")

    @property
    def findings(self) -> list[str]:
        """Clinical findings as short labels, the fine-grained annotations of a photo."""
        if self.disease == HEALTHY:
            return []
        grade = ("mild", "moderate", "severe")[self.severity - 1]
        by_disease = {
            PTOSIS: ["upper lid droop"],
            THYROID_EYE_DISEASE: ["lid retraction", "proptosis"] + (["lid swelling"] if self.severity >= 2 else []),
            STRABISMUS: [self.variant],
            CONJUNCTIVAL_REDNESS: ["conjunctival injection"],
            PERIOCULAR_TUMOUR: ["nodular lesion", self.tumour_site.replace("_", " ")]
            + (["central ulceration"] if self.severity >= 2 else []),
        }
        return [grade] + by_disease[self.disease]

    def to_dict(self) -> dict:
        return asdict(self)


def allowed_lateralities(disease: str) -> tuple[str, ...]:
    """The sides `disease` can take in this world."""
    return _ALLOWED_LATERALITY[disease]


def sample_condition(rng: np.random.Generator, disease: str) -> Condition:
    """A random laterality, severity and presentation for `disease`."""
    if disease == HEALTHY:
        return Condition()
    laterality = str(rng.choice(_ALLOWED_LATERALITY[disease]))
    severity = int(rng.integers(1, 4))
    extra = {}
    if disease == STRABISMUS:
        extra["variant"] = str(rng.choice(["esotropia", "exotropia"]))
    if disease == PERIOCULAR_TUMOUR:
        extra["tumour_site"] = str(rng.choice(TUMOUR_SITES))
        extra["tumour_angle"] = float(rng.uniform(-0.5, 0.5))
    extra["pattern_seed"] = int(rng.integers(0, 2**31 - 1))
    return Condition(disease=disease, laterality=laterality, severity=severity, **extra)
