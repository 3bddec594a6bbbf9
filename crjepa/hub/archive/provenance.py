"""What an embeddings archive records about where its vectors come from: the model (`model_fingerprint`, which
ties an archive and its indices to the exact weights that produced them: searching with another model's query
embeddings would silently return nonsense, so it is an error instead; `config_summary`) and the data source (the
published record without local paths, its license, and this machine's own record of a local folder)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crjepa.utils.atomic import atomic_write_json

if TYPE_CHECKING:
    from torch import nn

_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "transformers_version",
    "architectures",
    "auto_map",
    "dtype",
    "torch_dtype",
    "_attn_implementation_autoset",
    "_commit_hash",
    "custom_pipelines",
}
"""Config fields that say where and how a checkpoint was saved (or which pipeline class serves it), not what the
model computes: `model_fingerprint` leaves them out, so saving a model keeps its fingerprint."""


def model_fingerprint(model: nn.Module) -> str:
    """A short hex id of a model's computation: sha256 over its config (minus save-location fields) and the
    bytes of every parameter and buffer. Equal after save_pretrained/from_pretrained; different after any
    training step or config change. Used to tie archives and indices to the model that made them."""
    import torch

    encoder = getattr(model, "get_encoder", None)
    model = encoder() if callable(encoder) and hasattr(model, "crjepa") else model  # the encoder makes the vectors
    config = {k: v for k, v in model.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


def config_summary(config: Any) -> dict[str, Any]:
    """The facts about a model an archive needs: sensors, bands, sizes (stored in embeddings_info.json)."""
    return {
        "model_type": getattr(config, "model_type", "crjepa"),
        "sensors": dict(config.sensors),
        "band_names": {s: list(b) for s, b in config.band_names.items()},
        "sar_sensors": list(getattr(config, "sar_sensors", [])),
        "image_size": int(config.image_size),
        "retrieval_dim": int(config.retrieval_dim),
        "head_mode": getattr(config, "head_mode", "decoupled"),
    }


def public_path(value: Any) -> Any:
    """What may be published of a local path (`crjepa.hub.cards._public`: the one rule)."""
    from crjepa.hub.cards import _public

    return _public(value)


def archive_split(source: Mapping[str, Any] | None) -> str:
    """The split the archive's rows are published under (shard names, the card's data_files): the source's split,
    or "train" when the archive holds the whole source (datasets' name for a single split)."""
    return str((source or {}).get("split") or "train")


def source_license(source: Mapping[str, Any] | None) -> str | None:
    """The license of the data the vectors were computed from: a local export's card license, the built-in
    synthetic set's; None when unknown (a Hub data set: its own card says)."""
    dataset = str((source or {}).get("dataset") or "")
    if dataset == "synthetic":
        import importlib

        from crjepa.data.schema import BUILDER_MODULES

        return importlib.import_module(BUILDER_MODULES["synthetic"]).BUILDER_CLASS.CARD.get("license")
    if dataset and Path(dataset).expanduser().is_dir():
        from crjepa.data.loading import export_card

        found = export_card(Path(dataset).expanduser()).get("license")
        return str(found) if found else None
    return None


def public_source(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """The data source recorded in a published archive, with local paths reduced by `public_path`."""
    return {key: public_path(value) for key, value in dict(source or {}).items()}


LOCAL_SOURCE_FILE = ".crjepa-source.json"
"""The data source of an archive as this machine knows it (an absolute local folder), next to the published
record whose paths are reduced to their last component (`public_source`). Local bookkeeping: never uploaded
(`crjepa.hub.access.LOCAL_ONLY`), so `search --data recorded` finds a local folder again from any working folder,
while a downloaded archive falls back to the published record."""


def write_local_source(folder: Path, source: Mapping[str, Any] | None) -> None:
    """Record a local folder source of an archive by its absolute path (nothing for synthetic / Hub sources)."""
    source = dict(source or {})
    dataset = source.get("dataset")
    if isinstance(dataset, str) and dataset != "synthetic" and Path(dataset).expanduser().is_dir():
        source["dataset"] = str(Path(dataset).expanduser().resolve())
        atomic_write_json(Path(folder) / LOCAL_SOURCE_FILE, source)


def read_local_source(folder: Path) -> dict[str, Any] | None:
    """The local record of `write_local_source`, or None (absent or unreadable: the published record is used)."""
    try:
        data = json.loads((Path(folder) / LOCAL_SOURCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = [
    "LOCAL_SOURCE_FILE",
    "archive_split",
    "config_summary",
    "model_fingerprint",
    "public_path",
    "public_source",
    "read_local_source",
    "source_license",
    "write_local_source",
]
