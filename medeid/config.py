"""Typed configuration: dataclass defaults in code, named presets in `medeid/configs/*.yaml`.

A job loads a preset (`demo`: tiny CPU models, local stack; `paper`: full-size models on GPUs) or a
YAML file of its own, then applies command-line overrides. Credentials are never part of a config:
they come from the standard AWS variables (see `medeid.storage`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from medeid.storage import S3Settings

PRESETS_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: str | None = None  # None: take AWS_ENDPOINT_URL, else AWS itself
    region: str | None = None

    def settings(self) -> S3Settings:
        return S3Settings.from_env(endpoint_url=self.endpoint_url, region=self.region)


@dataclass(frozen=True)
class ArchiveConfig:
    """The synthetic hospital archive (`jobs/make_synthetic_archive.py`)."""

    patients: int = 48
    photos_per_patient: int = 4
    size: int = 128  # pixels, 64..256
    seed: int = 0


@dataclass(frozen=True)
class Config:
    preset: str = "demo"
    storage: StorageConfig = field(default_factory=StorageConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls, values: dict[str, Any], where: str):
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown keys in {where}: {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        kwargs[name] = _build(kind, value or {}, f"{where}.{name}") if dataclasses.is_dataclass(kind) else value
    return cls(**kwargs)


def load_config(preset_or_path: str = "demo", overrides: dict[str, Any] | None = None) -> Config:
    """A preset name or a YAML path, then dotted overrides such as {"archive.patients": 10}."""
    path = Path(preset_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{preset_or_path}.yaml"
    if not path.is_file():
        presets = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no config {preset_or_path!r}: give a YAML path or one of the presets {presets}")
    values = yaml.safe_load(path.read_text()) or {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return _build(Config, values, str(path))
