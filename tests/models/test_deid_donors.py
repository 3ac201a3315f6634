"""Donors drawn with the condition the medical model reads: the face MedSem-DeID starts from already
shows the photo's findings, so the signs come from the medical reading, not the patient's pixels."""

from dataclasses import asdict

import numpy as np
import torch

from medeid.models.deid.api import MedSemDeID, pattern_seed
from medeid.models.deid.donors import condition_from_reading, donor_with_condition, synthetic_donor
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import EYE_COLUMNS, EYE_ROWS, MedicalNet, MedicalNetConfig
from medeid.passwords import derive_model_key
from medeid.synth.conditions import CONJUNCTIVAL_REDNESS, DISEASES, LATERALITIES, PERIOCULAR_TUMOUR, STRABISMUS

SIZE = 64
EYES = (slice(round(EYE_ROWS[0] * SIZE), round(EYE_ROWS[1] * SIZE)),
        slice(round(EYE_COLUMNS[0] * SIZE), round(EYE_COLUMNS[1] * SIZE)))


def one_hot(names: tuple[str, ...], name: str, second: str | None = None) -> np.ndarray:
    p = np.full(len(names), 0.01)
    p[names.index(name)] = 0.9
    if second:
        p[names.index(second)] = 0.5
    return p


def test_the_reading_gives_the_likeliest_condition_the_world_allows():
    severity = np.array([0.1, 0.2, 0.6, 0.1])  # "healthy" grade 0 is never drawn for a disease
    # Strabismus is one-sided here: a reading of "bilateral" falls back to the likelier possible side.
    strabismus = condition_from_reading(one_hot(DISEASES, STRABISMUS), one_hot(LATERALITIES, "bilateral", "left"),
                                        severity, pattern_seed=3)
    assert (strabismus.disease, strabismus.laterality, strabismus.severity) == (STRABISMUS, "left", 2)
    assert strabismus.variant in ("esotropia", "exotropia")
    red = condition_from_reading(one_hot(DISEASES, CONJUNCTIVAL_REDNESS), one_hot(LATERALITIES, "bilateral"),
                                 severity)
    assert (red.disease, red.laterality) == (CONJUNCTIVAL_REDNESS, "bilateral")
    # A tumour's site and shape are not in the reading: the donor stays clear, the gate keeps the lesion.
    assert condition_from_reading(one_hot(DISEASES, PERIOCULAR_TUMOUR), one_hot(LATERALITIES, "left"),
                                  severity).disease == "healthy"


def test_with_drawable_donors_the_network_starts_from_the_donor_showing_the_read_condition():
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    for head, names, name in ((medical.disease_head, DISEASES, CONJUNCTIVAL_REDNESS),
                              (medical.laterality_head, LATERALITIES, "bilateral")):
        bias = torch.zeros_like(head.bias)
        bias[names.index(name)] = 50.0  # every photo reads as red eyes on both sides
        head.bias.data = bias
    seed = 4
    bank = donor_bank([synthetic_donor(i, seed).face(SIZE) for i in range(6)], SIZE)
    outputs = {}
    for donor_seed in (seed, None):
        net = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                          donors=len(bank), donor_seed=donor_seed), bank)
        net.medical.load_state_dict(medical.state_dict())
        model, key = MedSemDeID(net), derive_model_key("pw")
        photo = synthetic_donor(0, seed=99).face(SIZE)
        x = torch.from_numpy(photo[None]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        donor = torch.tensor([2])
        face = model.donor_faces(net.medical_reading(x), donor, [key])[0].permute(1, 2, 0)
        face = ((face + 1) * 127.5).round().numpy()
        outputs[donor_seed] = (face, model.deidentify_crops(photo[None], [key])[0].astype(float))
    reading = net.medical_reading(x)
    heads = ("disease", "laterality", "severity")
    condition = condition_from_reading(*(reading[h].softmax(1)[0].numpy() for h in heads), pattern_seed(key))
    red = donor_with_condition(2, seed, condition, SIZE).astype(float)
    healthy = bank[2].numpy().astype(float)
    assert np.abs(outputs[seed][0] - red).max() <= 1  # the drawn donor, exactly
    assert np.abs(red[EYES] - healthy[EYES]).mean() > 2  # which shows the condition: red sclerae
    # Before any training, the output's eyes are that donor's, in the photo's place (the bank's face
    # without drawable donors): the sclera's red comes with it.
    redness = {k: (out[EYES][..., 0] - out[EYES][..., 1]).mean() for k, (_, out) in outputs.items()}
    assert redness[seed] > redness[None] + 1


def test_a_photo_read_healthy_or_as_a_tumour_starts_from_the_banks_own_face():
    """No finding to draw (a tumour is the gate's): the donor is the bank's healthy face, unchanged."""
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    bank = donor_bank([synthetic_donor(i, 4).face(SIZE) for i in range(3)], SIZE)
    net = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                      donors=len(bank), donor_seed=4), bank)
    x = torch.from_numpy(synthetic_donor(0, seed=99).face(SIZE)[None]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    for disease in ("healthy", PERIOCULAR_TUMOUR):
        bias = torch.zeros_like(net.medical.disease_head.bias)
        bias[DISEASES.index(disease)] = 50.0
        net.medical.disease_head.bias.data = bias
        faces = MedSemDeID(net).donor_faces(net.medical_reading(x), torch.tensor([1]), [derive_model_key("pw")])
        assert torch.equal(faces, net.donor_images(torch.tensor([1])))
