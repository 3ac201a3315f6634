"""Export trained torch models in the formats their consumers load: ArcFace-layout ONNX packs.

A pack also carries the recogniser's torch weights (`recognizer.safetensors`): insightface reads
only the ONNX file, while MedSem-DeID's identity loss needs a recogniser it can differentiate.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from medeid.codecs import sha256
from medeid.models.identity import PACK_METADATA
from medeid.models.recognizer import INPUT_SIZE, TORCH_WEIGHTS, Recognizer


def export_recognizer_pack(model: Recognizer, pack_dir: str | Path, metadata: dict,
                           onnx_name: str | None = None) -> Path:
    """Write `model` as an insightface recognition ONNX file plus `pack.json` into `pack_dir`.

    The graph takes RGB in (x - 127.5) / 127.5 at 112 x 112 with a free batch axis, as insightface's
    ArcFaceONNX feeds it, and returns one output, the 512-d embedding.
    """
    pack = Path(pack_dir)
    pack.mkdir(parents=True, exist_ok=True)
    onnx_path = pack / (onnx_name or f"medeid_{model.architecture}.onnx")
    model = model.eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    # The legacy exporter: the dynamo one needs onnxscript, and names outputs numerically.
    torch.onnx.export(model, (dummy,), str(onnx_path), input_names=["input"], output_names=["embedding"],
                      dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(pack / TORCH_WEIGHTS))
    info = {"recognition_model": onnx_path.name, "onnx_sha256": sha256(onnx_path.read_bytes()),
            "architecture": model.architecture, "width": model.width, "input_size": INPUT_SIZE, **metadata}
    (pack / PACK_METADATA).write_text(json.dumps(info, indent=1))
    return onnx_path
