"""The MedSem-DeID network itself: what of the photo it may see."""

from dataclasses import asdict

import torch
from torch import nn

from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, to_donor_skin
from medeid.models.medical import MedicalNet, MedicalNetConfig

SIZE = 64


def net(skin_shift: bool) -> MedSemDeIDNet:
    torch.manual_seed(0)
    medical = MedicalNet(MedicalNetConfig(image_size=SIZE, widths=(8, 16, 24, 32))).eval()
    model = MedSemDeIDNet(DeidNetConfig(image_size=SIZE, widths=(8, 16, 16), medical=asdict(medical.config),
                                        skin_shift=skin_shift)).eval()
    for layer in (model.head, model.fine_flow):  # zero at first (the output is the donor): make x count
        nn.init.normal_(layer.weight, std=0.1)
    return model


@torch.no_grad()
def test_the_patients_skin_tone_does_not_reach_the_new_face():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, SIZE, SIZE, generator=generator) * 1.2 - 0.6
    donor = torch.rand(2, 3, SIZE, SIZE, generator=generator) * 2 - 1
    darker = x - torch.tensor([0.3, 0.35, 0.4])[:, None, None]  # the same photo on a darker skin
    key = torch.randn(2, 128, generator=generator)
    for skin_shift in (True, False):
        model = net(skin_shift)
        reading = model.medical_reading(x)  # Enc_med's reading held fixed: only what the decoder sees differs
        faces = [model(image, key, donor, reading=reading)["face"] for image in (x, darker)]
        difference = (faces[0] - faces[1]).abs().max().item()
        if skin_shift:
            assert difference < 1e-4  # it sees both photos on the donor's skin: the same input
        else:
            assert difference > 1e-2  # it sees the patient's skin, and carries it


def test_the_photo_moves_to_the_donors_skin_tone():
    x = torch.full((1, 3, SIZE, SIZE), -0.2)
    donor = torch.full((1, 3, SIZE, SIZE), 0.5)
    donor[:, 0] = 0.7
    x[:, :, :5] = 0.9  # hair, say: moved by the same amount, clamped to the range
    moved = to_donor_skin(x, donor)
    assert torch.allclose(moved[:, :, 30], donor[:, :, 30])
    assert moved.max() <= 1 and torch.allclose(moved[:, 1, 0], torch.tensor(1.0))
