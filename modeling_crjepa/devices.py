"""Moving tensors from the host to the device without making the host wait.

Shared by the losses (SIGReg's directions and quadrature weights, built on the CPU), the on-device preprocessing
(the normalisation statistics) and the training loop (per-sample mask keys). This module travels with the model as
remote code (the losses and the image processor import it): it imports only torch.
"""

from __future__ import annotations

import torch


def host_to_device(tensor: torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """A CPU tensor on ``device`` without a host sync: pinned + non_blocking for accelerators (a plain copy
    from pageable memory makes the host wait for the device queue), unchanged for the CPU / None."""
    if device is None or torch.device(device).type == "cpu":
        return tensor if device is None else tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


__all__ = ["host_to_device"]
