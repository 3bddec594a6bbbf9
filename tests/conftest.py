"""Fixtures shared by the test modules. Plain helper functions are in tests/helpers.py.

Each engineer's fixtures live in their own marked section below.
"""

from __future__ import annotations

import pytest


# ==================================================================================================================
# Shared model fixtures
# ==================================================================================================================
@pytest.fixture(scope="module")
def model():
    """The tiny CR-JEPA model (seed 0, eval mode): what the retrieval, archive and search tests embed with."""
    import torch

    from modeling_crjepa import CRJepaConfig, CRJepaModel

    torch.manual_seed(0)
    return CRJepaModel(CRJepaConfig.from_preset("tiny")).eval()
