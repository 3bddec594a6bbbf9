"""What several `crjepa` commands share: the data-source and model arguments, loading them, the device, ``--param``
values and the Milvus backend options. Heavy imports happen inside the functions so ``--help`` stays instant."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crjepa.data.schema import SYNTHETIC_OPTIONS  # light: no torch, no datasets (--help stays instant)
from crjepa.errors import CRJepaError
from crjepa.utils.arguments import UsageError, int_in

if TYPE_CHECKING:
    import datasets
    import torch

    from modeling_crjepa import CRJepaModel


class ModelError(CRJepaError, ValueError):
    """A model folder or Hub repo that does not load as a CR-JEPA model (its config or weights do not fit)."""


SYNTHETIC_LIMITS = {
    "num_pairs": (1, 100_000),
    "num_train": (0, 100_000),
    "num_validation": (0, 100_000),
    "num_test": (0, 100_000),
    "image_size": tuple(map(int, SYNTHETIC_OPTIONS["image_size"][1:])),
    "seed": tuple(map(int, SYNTHETIC_OPTIONS["seed"][1:])),
}
"""Bounds on the synthetic-data options (the command line's and those an archive records: a crafted size must not
allocate gigabytes): ``num_pairs`` (`crjepa embed`) or the per-split sizes a training run records (its
``data.options``)."""


def add_data_arguments(parser: argparse.ArgumentParser, split_help: str) -> None:
    parser.add_argument(
        "data",
        help="data source: 'synthetic' (built in), a folder of Parquet exported by "
        "`python -m datasets_scripts`, or such an export's Hub data set id (user/name)",
    )
    parser.add_argument("--split", default=None, help=split_help)
    parser.add_argument(
        "--num-pairs",
        type=int_in(*SYNTHETIC_LIMITS["num_pairs"]),
        default=None,
        help="synthetic data: pairs per split (default: the generator's sizes)",
    )
    parser.add_argument(
        "--seed", type=int_in(*SYNTHETIC_LIMITS["seed"]), default=0, help="synthetic data: seed (default 0)"
    )
    parser.add_argument(
        "--image-size",
        type=int_in(*SYNTHETIC_LIMITS["image_size"]),
        default=None,
        help="synthetic data: native image side in pixels (8 to 512)",
    )


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """What identifies the data (stored in the archive so `search --png` can find the images again)."""
    options: dict[str, Any] = {"dataset": args.data}
    if args.data == "synthetic":
        options["seed"] = args.seed
        if args.num_pairs is not None:
            options["num_pairs"] = args.num_pairs
        if args.image_size is not None:
            options["image_size"] = args.image_size
    elif not Path(args.data).is_dir():
        from crjepa.hub.access import is_repo_id

        if not is_repo_id(args.data):
            raise FileNotFoundError(
                f"Data source {args.data!r} is neither 'synthetic', a folder of Parquet files, nor "
                "a Hub data set id (user/name)"
            )
    return options


def load_data(options: dict[str, Any], split: str | None) -> datasets.Dataset | datasets.DatasetDict:
    """The paired datasets.Dataset of a source (`crjepa.data.loading.load_paired_dataset`), optionally one
    split. The synthetic data is deterministic from its options, so `search --png` regenerates the same images."""
    from crjepa.data.loading import load_paired_dataset

    kwargs = {k: v for k, v in options.items() if k != "dataset"}
    if "num_pairs" in kwargs:  # one size for every synthetic split
        n = kwargs.pop("num_pairs")
        kwargs.update(num_train=n, num_validation=n, num_test=n)
    return load_paired_dataset(options["dataset"], split=split, **kwargs)


def pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise UsageError(f"--device {name}: no such GPU here ({torch.cuda.device_count()} visible); use auto or cpu")
    return device


def load_model(path: str, device: str = "auto") -> CRJepaModel:
    """A CR-JEPA model from a saved folder (or Hub repo), in eval mode on the chosen device."""
    from crjepa.utils.files import check_safetensors_in
    from modeling_crjepa.modeling_crjepa import CRJepaModel

    if Path(path).is_dir():
        check_safetensors_in(path)  # a crafted header: one line naming the file, before any allocation
    try:
        model = CRJepaModel.from_pretrained(path)
    except OSError as err:
        raise FileNotFoundError(f"Cannot load a CR-JEPA model from {path!r}: {str(err).splitlines()[0]}") from err
    except (ValueError, TypeError) as err:  # the model package's input errors: its config.json does not fit
        raise ModelError(str(err)) from err
    except Exception as err:
        if type(err).__name__ != "SafetensorError":
            raise
        raise ModelError(f"Cannot load a CR-JEPA model from {path!r}: {str(err).splitlines()[0]}") from None
    return model.to(pick_device(device)).eval()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="saved model folder (save_pretrained) or Hub model repo id")
    parser.add_argument("--batch-size", type=int_in(1, 65_536), default=64, help="images per forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="'auto' (GPU if available), 'cpu', 'cuda', 'cuda:1'...")
    parser.add_argument(
        "--num-workers", type=int_in(0, 256), default=0, help="data loader worker processes (default 0)"
    )


def parse_param(text: str) -> tuple[str, Any]:
    """'M=32' -> ('M', 32); numbers become numbers, everything else stays a string."""
    if "=" not in text:
        raise UsageError(f"--param takes key=value, found {text!r}")
    key, value = text.split("=", 1)
    for cast in (int, float):
        try:
            return key, cast(value)
        except ValueError:
            pass
    return key, value


def backend_of(args: argparse.Namespace) -> str:
    """faiss (in-process, the default) or milvus (needs --uri); Milvus options without it are errors."""
    if args.backend == "milvus" and not args.uri:
        raise UsageError(
            "--backend milvus needs --uri: a Milvus Lite file (e.g. emb.db) or a server (http://host:19530)"
        )
    if args.backend == "faiss" and args.uri:
        raise UsageError("--uri is for --backend milvus (faiss indices live in the archive folder)")
    return args.backend


def milvus_token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("MILVUS_TOKEN") or None


def add_milvus_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Milvus (archives past one machine; pip install "crjepa[milvus]")')
    group.add_argument(
        "--backend",
        default="faiss",
        choices=["faiss", "milvus"],
        help="faiss in this process (default) or a Milvus collection per vector column",
    )
    group.add_argument(
        "--uri",
        default=None,
        help="Milvus Lite file (path ending in .db) or server/cluster address (http://host:19530)",
    )
    group.add_argument("--token", default=None, help="Milvus server token, e.g. user:password (default $MILVUS_TOKEN)")
    group.add_argument(
        "--prefix", default=None, help="collection names <prefix>_<column> (default crjepa_<archive folder name>)"
    )


__all__ = [
    "SYNTHETIC_LIMITS",
    "ModelError",
    "add_data_arguments",
    "add_milvus_arguments",
    "add_model_arguments",
    "backend_of",
    "load_data",
    "load_model",
    "milvus_token",
    "parse_param",
    "pick_device",
    "source_options",
]
