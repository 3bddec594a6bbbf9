"""crjepa.data.schema: the facts every data set shares, and the model presets that must agree with them."""

from __future__ import annotations

import pytest

from crjepa.data import schema
from modeling_crjepa.configuration_crjepa import PRESETS, CRJepaConfig


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_model_presets_spell_the_schema_band_orders(preset):
    """The model package cannot import the application, so its presets spell the band orders again; they must
    be the data's, or a model would read B02 where the data holds B01."""
    config = CRJepaConfig.from_preset(preset)
    orders = {"s1": list(schema.S1_BANDS), "s2": list(schema.S2_BANDS)}
    for sensor, bands in config.band_names.items():
        if sensor in orders:
            assert list(bands) == orders[sensor], f"preset {preset!r}, sensor {sensor!r}"
            assert config.sensors[sensor] == len(orders[sensor])


def test_builders_use_the_schema_band_orders():
    from datasets_scripts import bigearthnet, synthetic
    from datasets_scripts.bigearthnet import builder, reading

    for module in (reading, builder):  # the modules that read the bands and declare the columns
        assert module.S2_BANDS is schema.S2_BANDS and module.S1_BANDS is schema.S1_BANDS
    assert synthetic.S2_BANDS is schema.S2_BANDS and synthetic.S1_BANDS is schema.S1_BANDS
    features = bigearthnet.features()
    assert features["s2"].shape[0] == len(schema.S2_BANDS) and features["s1"].shape[0] == len(schema.S1_BANDS)
    assert synthetic.features()["s2"].shape[0] == len(schema.S2_BANDS)
