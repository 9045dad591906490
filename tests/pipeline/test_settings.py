"""The settings object: every field documented, TOML and flags override, unknown keys refused."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.errors import InputError
from pipeline.settings import Settings, help_for


def test_every_setting_has_one_line_help():
    for field in dataclasses.fields(Settings):
        text = help_for(field.name)
        assert text and "\n" not in text, field.name


def test_defaults_then_toml_then_flags(tmp_path):
    toml = tmp_path / "settings.toml"
    toml.write_text('model = "pixels"\nbatch_size = 8\ndetectors = ["iforest", "lof"]\n')
    settings = Settings.load(toml, batch_size=64, timezone=None)
    assert settings.model == "pixels"  # from the file
    assert settings.batch_size == 64  # the flag wins
    assert settings.detectors == ["iforest", "lof"]
    assert settings.timezone is None  # an unset flag does not override
    assert Settings().model == "vgg16-hed-grid"  # default untouched


def test_unknown_keys_are_an_error_that_lists_known_ones(tmp_path):
    toml = tmp_path / "settings.toml"
    toml.write_text("modle = 'pixels'\n")
    with pytest.raises(InputError, match="unknown setting.*modle.*known settings.*model"):
        Settings.load(toml)


def test_bad_toml_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("model = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        Settings.load(bad)
    with pytest.raises(InputError, match="does not exist"):
        Settings.load(tmp_path / "none.toml")


def test_detector_lists_default_to_the_registry_and_are_not_shared():
    """Unset, the detector lists are the registry's defaults, filled in for the analysis (so
    only it imports the detectors); each copy gets lists of its own."""
    from pipeline.detectors import default_consensus, default_detectors

    assert Settings().detectors is None and Settings().consensus_detectors is None
    a, b = Settings().with_detector_defaults(), Settings().with_detector_defaults()
    assert a.detectors == default_detectors() and a.consensus_detectors == default_consensus()
    a.detectors.append("extra")
    assert "extra" not in b.detectors
    assert Settings(detectors=["lof"]).with_detector_defaults().detectors == ["lof"]


def test_a_binary_file_or_a_folder_is_a_clear_settings_error(tmp_path):
    binary = tmp_path / "photo.toml"
    binary.write_bytes(b"\xff\xd8\xff\xe0 not text")
    with pytest.raises(InputError, match="photo.toml is not valid TOML"):
        Settings.load(binary)
    with pytest.raises(InputError, match="cannot read the settings file"):
        Settings.load(tmp_path)
