"""A torch model saved as a folder: `config.json` (its config) beside `model.safetensors`.

The medical model and MedSem-DeID are stored this way; `read_model` loads from a local folder or
an S3 prefix (copied once per node) and says which file is missing when one is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medeid import storage

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def save_model(model: torch.nn.Module, config: dict, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS_FILE))
    return directory


def read_model(uri: str, what: str, settings: storage.S3Settings | None = None) -> tuple[dict, dict]:
    """The config values and the state dict of the `what` saved at `uri`."""
    directory = storage.local_copy(uri, settings)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{name} is missing from the {what} at {uri}")
    return json.loads((directory / CONFIG_FILE).read_text()), load_file(str(directory / WEIGHTS_FILE))
