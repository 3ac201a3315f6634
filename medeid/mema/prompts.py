"""Text conditions for the generator, built from a row's labels with the config's template.

The same function writes the prompts the generator is fine-tuned on (archive rows) and the prompts
MeMa is generated from (sampled condition rows), so the two always speak the same language.
"""

from __future__ import annotations

from medeid.mema.statistics import age_band
from medeid.synth.conditions import HEALTHY

SIDES = {"right": "the right eye", "left": "the left eye", "bilateral": "both eyes", "none": ""}


def condition_text(disease: str, laterality: str, findings) -> str:
    """'ptosis of the left eye, moderate upper lid droop' or 'healthy eyes'."""
    if disease == HEALTHY:
        return "healthy eyes"
    name = disease.replace("_", " ")
    side = SIDES.get(laterality, "")
    text = f"{name} of {side}" if side else name
    findings = [str(f) for f in (findings if findings is not None else [])]
    return f"{text}, {' '.join(findings)}" if findings else text


def prompt(row: dict, template: str) -> str:
    """The template filled from a row with age, sex, disease, laterality and findings."""
    fields = {
        "sex": row["sex"],
        "age": int(row["age"]),
        "age_band": age_band(int(row["age"])),
        "disease": str(row["disease"]).replace("_", " "),
        "condition": condition_text(row["disease"], row["laterality"], row["findings"]),
    }
    try:
        return template.format(**fields)
    except KeyError as error:
        raise ValueError(f"the prompt template names {error}, which is not one of {sorted(fields)}") from None
