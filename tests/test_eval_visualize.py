"""crjepa.eval.visualize: how native images of any sensor become displayable tiles."""

from __future__ import annotations

import numpy as np

from crjepa.eval.visualize import display_image
from modeling_crjepa import CRJepaConfig


def test_display_image_picks_bands_by_name():
    names = CRJepaConfig.from_preset("tiny").band_names
    s2 = np.zeros((12, 8, 8), np.uint16)
    s2[names["s2"].index("B04")] = 3000  # only red reflects -> true colour is red
    s2[names["s2"].index("B04"), 0, 0] = 0
    pixel = np.asarray(display_image(s2, names["s2"]))[4, 4]
    assert pixel[0] == 255 and pixel[1] == 0 and pixel[2] == 0
    s1 = np.stack([np.full((8, 8), -5.0), np.full((8, 8), -20.0)]).astype(np.float32)
    s1 += np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    rgb = np.asarray(display_image(s1, names["s1"], sar=True))
    assert rgb.shape == (8, 8, 3) and rgb[..., 0].max() == 255  # VV, VH, VV-VH each stretched
    grey = np.asarray(display_image(np.arange(16.0).reshape(1, 4, 4)))
    assert (grey[..., 0] == grey[..., 2]).all()
