"""Presets are typed option instances, each part citing its source, validated when they are defined."""

import pytest
from pydantic import ValidationError

from devices import open_device
from simulators.crossbar import CrossbarPhysics
from simulators.crossbar.readout import OutputNoiseOptions, ReadNoiseOptions
from simulators.options import SimOptions
from simulators.presets import PRESETS, Cited, Preset


def test_a_preset_is_refused_when_defined_not_when_a_url_opens_it():
    with pytest.raises(ValueError, match="read_noise.*twice"):
        Preset(CrossbarPhysics, Cited(ReadNoiseOptions(read_noise=0.01), "a"),
               Cited(ReadNoiseOptions(read_noise=0.02), "b"))
    with pytest.raises(ValueError, match="no source"):
        Preset(CrossbarPhysics, Cited(OutputNoiseOptions(output_noise=0.04), " "))
    with pytest.raises(ValidationError, match="layers"):  # topology is the URL's, never a preset's
        Preset(CrossbarPhysics, Cited(SimOptions(layers=[4, 2]), "a"))
    with pytest.raises(ValidationError, match="read_noise"):
        ReadNoiseOptions(read_noise=-1)


@pytest.mark.parametrize("kind, name", [(kind, name) for kind, presets in PRESETS.items() for name in presets])
def test_every_preset_cites_each_part_and_opens_with_its_values(kind, name):
    preset = PRESETS[kind][name]
    assert all(part.source.strip() for part in preset.parts)
    device = open_device(f"sim://{kind}?preset={name}")
    assert all(getattr(device.options, field) == value for field, value in preset.values().items())
    assert (name == "ideal") == (not preset.values())
