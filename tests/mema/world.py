"""A small MeMa world on the local S3 server: an archive, untrained models of the real classes and
the recogniser's identity index of the archive's patients.

Untrained models are enough to exercise the dataflow, but they decide nothing meaningful, so the
fixture pins what they would decide: the recognisers' match threshold is 0.99 (only a near-copy of
a real photo matches), and `calibrated_disease` is the disease the untrained classifier sees in
the untrained generator's images, so a mix of it and another disease gives both releases and
plausibility rejections.
"""

import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from medeid import storage
from medeid.config import MemaConfig
from medeid.mema.generation import FaceGenerator
from medeid.mema.prompts import prompt
from medeid.models.export import export_recognizer_pack
from medeid.models.generator import TinyGeneratorConfig, build_tiny_pipeline
from medeid.models.medical import MedicalNet, MedicalNetConfig
from medeid.models.recognizer import Recognizer
from medeid.pipelines.identity_index import build_identity_index
from medeid.pipelines.synthetic_archive import build_archive
from medeid.synth.conditions import DISEASES

TEMPLATE = "a clinical photo of a {sex} patient aged {age_band} with {condition}"


@pytest.fixture(scope="session")
def mema_world(ray_session, s3, tmp_path_factory):
    root = f"s3://mema-{uuid.uuid4().hex[:10]}"
    storage.make_bucket(root, s3.settings)
    archive = build_archive(f"{root}/archive", 30, 2, size=64, seed=3)
    local = tmp_path_factory.mktemp("mema-models")
    torch.manual_seed(0)
    export_recognizer_pack(Recognizer("resnet"), local / "recognizer", {"match_threshold": 0.99})
    export_recognizer_pack(Recognizer("mobile"), local / "evaluator", {"match_threshold": 0.99})
    medical = MedicalNet(MedicalNetConfig(image_size=64, widths=(8, 16, 24, 32))).eval()
    medical.save(local / "medical")
    pipe = build_tiny_pipeline(TinyGeneratorConfig(resolution=32), seed=0)
    pipe.save_pretrained(local / "generator")
    storage.copy_tree(str(local), f"{root}/models")
    # The recogniser's index of the real patients, built once for the builds and tests that only read it.
    index = build_identity_index(archive.root, f"{root}/models/recognizer", f"{root}/index", s3.settings)
    assert index["reconciled"] and index["written"] == 60

    # What the untrained classifier sees in the untrained generator's faces.
    generator = FaceGenerator(pipe, steps=2, guidance=2.0)
    rows = [{"sex": "female", "age": 50, "disease": d, "laterality": "none", "findings": []} for d in DISEASES]
    images = generator.generate([prompt(r, TEMPLATE) for r in rows], list(range(len(rows))))
    big = torch.from_numpy(np.stack([cv2.resize(i, (64, 64), interpolation=cv2.INTER_CUBIC) for i in images]))
    seen = np.bincount(medical.classify(big)["disease"].argmax(1).numpy(), minlength=len(DISEASES))
    calibrated = DISEASES[int(seen.argmax())]
    present = set(archive.metadata["disease"].to_pylist())
    assert calibrated in present, f"no patient in the test archive has {calibrated}"
    other = next(d for d in DISEASES if d != calibrated and d in present)
    return {"root": root, "archive": archive.root, "models": f"{root}/models", "index": f"{root}/index",
            "metadata": archive.metadata,
            "calibrated_disease": calibrated, "other_disease": other}


@pytest.fixture(scope="session")
def write_mema_config():
    return write_config


def write_config(world: dict, directory: Path, **mema) -> str:
    """A YAML config for the test world: fast generation, the calibrated disease mix."""
    values = {"samples": 12, "steps": 2, "guidance": 2.0, "batch_size": 4, "max_attempts": 2,
              "identity_margin": 0.0, "min_sharpness": 0.0, "min_contrast": 0.0,
              "disease_mix": {world["calibrated_disease"]: 0.75, world["other_disease"]: 0.25}, **mema}
    assert set(values) <= set(MemaConfig.__dataclass_fields__)
    path = directory / "mema-test.yaml"
    path.write_text(yaml.safe_dump({"preset": "test", "mema": values}))
    return str(path)
