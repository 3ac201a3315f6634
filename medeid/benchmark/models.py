"""The models the suites run: speed does not depend on training, so an untrained MedSem-DeID and a
briefly trained detector."""

from __future__ import annotations


def deid_model(directory: str, size: int, seed: int = 0) -> str:
    """An untrained MedSem-DeID of the demo's shape at `size` px (speed does not depend on training)."""
    from dataclasses import asdict

    import torch

    from medeid.config import DeidConfig
    from medeid.models.deid.donors import synthetic_donors
    from medeid.models.deid.model import DeidNetConfig, MedSemDeIDNet, donor_bank
    from medeid.models.medical import MedicalNetConfig

    torch.manual_seed(seed)
    cfg = DeidConfig()
    donors = donor_bank(synthetic_donors(16, size), size)
    # As trained: the donors (seed 0) are drawn again with each photo's reading.
    medical = asdict(MedicalNetConfig(image_size=size))
    net = MedSemDeIDNet(DeidNetConfig(image_size=size, widths=cfg.widths, medical=medical, donors=len(donors),
                                      donor_seed=0), donors)
    net.save(f"{directory}/deid-{size}")
    return f"{directory}/deid-{size}"


def detector_pack(directory: str) -> str:
    """A briefly trained detector (~40 s, as the tests' session detector): an untrained one finds
    faces everywhere or nowhere, which would measure another job."""
    from medeid.models.detector import export_detector_pack
    from medeid.train.detector import train_briefly

    export_detector_pack(train_briefly(), f"{directory}/detector", {"det_thresh": 0.5, "note": "benchmark"})
    return f"{directory}/detector"
