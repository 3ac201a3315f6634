"""Donors drawn with the condition the medical model reads: the face MedSem-DeID starts from already
shows the photo's findings, so the signs come from the medical reading, not the patient's pixels."""

import dataclasses
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from medeid.models.deid.api import MedSemDeID, pattern_seed
from medeid.models.deid.donors import (
    READING_HEADS,
    bank_donor,
    candidate_conditions,
    candidate_rows,
    drawn_readings,
    matching_condition,
    read_drawn,
    synthetic_donor,
)
from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
from medeid.models.medical import EYE_COLUMNS, EYE_ROWS, MedicalNet, MedicalNetConfig
from medeid.passwords import derive_model_key
from medeid.synth.conditions import (
    CONJUNCTIVAL_REDNESS,
    DISEASES,
    LATERALITIES,
    PERIOCULAR_TUMOUR,
    STRABISMUS,
    Condition,
    allowed_lateralities,
)

SIZE = 64
EYES = (slice(round(EYE_ROWS[0] * SIZE), round(EYE_ROWS[1] * SIZE)),
        slice(round(EYE_COLUMNS[0] * SIZE), round(EYE_COLUMNS[1] * SIZE)))


def test_candidates_are_every_side_grade_and_direction_the_world_allows():
    squints = candidate_conditions(STRABISMUS, pattern_seed=3)
    # Strabismus is one-sided in this world: no bilateral candidate; three grades, two directions.
    assert {c.laterality for c in squints} == set(allowed_lateralities(STRABISMUS)) and "bilateral" not in {
        c.laterality for c in squints}
    assert len(squints) == len(allowed_lateralities(STRABISMUS)) * 3 * 2
    assert {c.variant for c in squints} == {"esotropia", "exotropia"} and {c.pattern_seed for c in squints} == {3}
    # A tumour's site and shape are not in a reading: the donor stays clear, the gate keeps the lesion.
    assert candidate_conditions(PERIOCULAR_TUMOUR) == candidate_conditions("healthy") == [Condition()]


class PixelReader(torch.nn.Module):
    """A reader whose class probabilities move with every drawn pixel (an untrained MedicalNet's barely
    do: its readings of two drawings differ by float noise): a fixed random projection per head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        sizes = {"disease": len(DISEASES), "laterality": len(LATERALITIES), "severity": 4}
        self.disease = STRABISMUS  # what every face reads as: the side, grade and direction vary
        self.heads = torch.nn.ModuleDict({h: torch.nn.Linear(SIZE * SIZE * 3, n) for h, n in sizes.items()})

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images.flatten(1).float() / 255.0
        reading = {h: (head(x) * 20).softmax(1) for h, head in self.heads.items()}
        reading["disease"] = F.one_hot(torch.full((len(x),), DISEASES.index(self.disease)), len(DISEASES)).float()
        return reading


def test_the_matching_condition_is_the_drawing_that_reads_like_the_photo():
    """A reading made on a drawing of condition c gives back c, whatever its side, grade or direction:
    the match uses the whole reading, not its argmax side and grade."""
    reader, person = PixelReader(), synthetic_donor(1, 4)
    for disease in (STRABISMUS, CONJUNCTIVAL_REDNESS):
        reader.disease = disease
        for condition in candidate_conditions(disease):
            face = torch.from_numpy(person.face(SIZE, condition)[None])
            reading = {h: p[0].numpy() for h, p in reader.classify(face).items()}
            matched = matching_condition(reading, person, reader, SIZE, pattern_seed=5)
            assert matched == dataclasses.replace(condition, pattern_seed=5)  # the key's vessel pattern


def test_a_models_stored_readings_match_as_drawing_the_donor_again_does(tmp_path):
    """A model keeps the reading of its whole bank drawn with every candidate (`read_drawn`): the match
    it makes from them is the one drawing the donor again makes, and they survive saving."""
    reader, person = PixelReader(), synthetic_donor(1, 4)
    for disease in (STRABISMUS, CONJUNCTIVAL_REDNESS):
        reader.disease = disease
        stored = read_drawn(person, SIZE, reader)  # the reader's disease head is fixed: read again
        again = drawn_readings(person, disease, SIZE, reader)
        for head in READING_HEADS:
            assert np.allclose(stored[head][candidate_rows()[disease]], again[head].numpy(), atol=1e-5)
        for condition in candidate_conditions(disease):
            face = torch.from_numpy(person.face(SIZE, condition)[None])
            reading = {h: p[0].numpy() for h, p in reader.classify(face).items()}
            assert (matching_condition(reading, person, reader, SIZE, 5, drawn=stored)
                    == matching_condition(reading, person, reader, SIZE, 5) == dataclasses.replace(condition,
                                                                                                  pattern_seed=5))
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    people = [synthetic_donor(i, 4) for i in range(3)]
    table = [read_drawn(p, SIZE, medical) for p in people]
    drawn = {h: torch.from_numpy(np.stack([t[h] for t in table])) for h in READING_HEADS}
    net = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                      donors=3, donor_seed=4, drawn_readings=True),
                        donor_bank([p.face(SIZE) for p in people], SIZE), drawn)
    net.medical.load_state_dict(medical.state_dict())
    net.save(tmp_path / "model")
    loaded = MedSemDeIDNet.from_uri(str(tmp_path / "model"))
    for donor in range(3):
        assert all(np.array_equal(loaded.drawn_of(donor)[h], table[donor][h]) for h in READING_HEADS)
    assert MedSemDeIDNet(dataclasses.replace(net.config, drawn_readings=False)).drawn_of(0) is None


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
    reading = {h: p.softmax(1)[0].numpy() for h, p in net.medical_reading(x).items() if h in READING_HEADS}
    condition = matching_condition(reading, bank_donor(2, seed), net.medical, SIZE, pattern_seed(key))
    assert condition.disease == CONJUNCTIVAL_REDNESS
    red = bank_donor(2, seed).face(SIZE, condition).astype(float)
    healthy = bank[2].numpy().astype(float)
    assert np.abs(outputs[seed][0] - red).max() <= 1  # the drawn donor, exactly

    def redness(face):
        return (face[EYES][..., 0] - face[EYES][..., 1]).mean()

    assert redness(red) > redness(healthy) + 1  # which shows the condition: red sclerae
    # Before any training, the output's eyes are that donor's, in the photo's place (the bank's face
    # without drawable donors): the sclera's red comes with it.
    assert redness(outputs[seed][1]) - redness(outputs[None][1]) > 0.25 * (redness(red) - redness(healthy))


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
