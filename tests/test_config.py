import pytest

from medeid.config import load_config


def test_presets_and_overrides(tmp_path):
    demo = load_config("demo", {"archive.patients": 7, "archive.seed": None})
    assert demo.preset == "demo" and demo.archive.patients == 7 and demo.archive.seed == 0
    assert load_config("paper").archive.size == 256
    custom = tmp_path / "mine.yaml"
    custom.write_text("archive:\n  size: 64\n")
    assert load_config(str(custom)).archive.size == 64


def test_mistakes_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="demo"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("archive:\n  patient: 3\n")
    with pytest.raises(ValueError, match="patient"):
        load_config(str(bad))
