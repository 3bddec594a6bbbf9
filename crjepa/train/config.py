"""The run configuration of `train_accelerate.py`: schema, YAML files, command-line overrides, checks, --help.

One nested mapping (`DEFAULTS` lists every valid key, with a comment that documents it) read from a YAML file
(``extends:`` a base file; the packaged configs/ when the path is a bare name) and overridden by ``--key value``
command-line pairs (dotted keys for nested sections, a bare name when unique, values parsed as YAML scalars). An
unknown key is an error that names the key and the valid ones; every value is type- and range-checked (`RANGES`)
with the rest, all problems in one `ConfigError`, before anything else happens. `config_help` is the --help text,
generated from the schema and its comments (`key_docs`).
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import yaml

from crjepa.errors import CRJepaError
from crjepa.utils.resources import resource_file
from modeling_crjepa.configuration_crjepa import PRESETS, CRJepaConfig

RunConfig: TypeAlias = dict[str, Any]
"""A loaded run configuration: the sections of `DEFAULTS` (nested dicts) plus `META_KEYS`."""

DEFAULT_CONFIG = resource_file("configs", "cpu_default.yaml")
"""The configuration `train_accelerate.py` uses when no --config is given."""

FREE_FORM = ("data.options", "data.extra_sources", "data.mix")
"""Sections whose keys are passed on unchecked (the data source's own keyword arguments)."""

DEFAULTS: dict[str, Any] = {
    "seed": 0,  # seeds the model init, the data order, the masks and SIGReg's directions
    "output_dir": "outputs/crjepa",  # model/, embeddings/, checkpoints/, logs/, results.json go here
    "resume": False,  # true: continue from the latest checkpoint in output_dir (fresh start when there is none)
    "overwrite_output_dir": False,  # true: a fresh run may replace the checkpoints of an earlier run in output_dir
    "model": {
        "architecture": "crjepa",  # crjepa, or a baseline of crjepa.baselines.models (xjepa, contrastive)
        "preset": "tiny",  # a preset of configuration_crjepa.PRESETS; every other key overrides a config field
    },
    "data": {
        "source": "synthetic",  # "synthetic", a folder of exported Parquet, or a builder name (its options)
        "path": None,  # an exported Parquet folder (python -m datasets_scripts ...); set, it is the data
        "name": None,  # the data set's name in the card (default: the export's name, else the source)
        "hub_id": None,  # the data set's Hub id, listed in the model card's metadata
        "options": {},  # extra keyword arguments of load_paired_dataset (e.g. synthetic sizes)
        # more data sets trained on together with this one, e.g. single-sensor exports: {name: folder}; rows lacking
        # a sensor train the terms they can (README: archives that are not fully paired)
        "extra_sources": {},
        "mix": None,  # {name: share} of each training epoch ("paired" = the main data set); null: every row once
        # share of each training epoch drawn from the rows that have every sensor (e.g. 0.5 when a quarter of the
        # rows are pairs: pairs repeated, single-sensor rows once); null: every row once, pairs at their own share
        "pair_share": None,
        "train_split": "train",  # the split trained on
        "batch_size": 64,  # per process; the global batch is batch_size x processes x accumulation steps
        "num_workers": 0,  # DataLoader worker processes
    },
    "training": {
        "epochs": 10,  # length of the run and of the learning-rate schedule
        "max_steps": None,  # stop after this many optimiser steps (the schedule still follows `epochs`)
        "gradient_accumulation_steps": 1,  # micro-batches per optimiser step
        "mixed_precision": None,  # no | fp16 | bf16; null: the launcher's (`accelerate config` / launch flags)
        "max_grad_norm": 1.0,  # gradient clipping (global L2 norm)
        "weight_decay": 0.04,  # AdamW, on weight matrices only
        "lr_start": 1.0e-4,  # warm-up start
        "lr": 1.0e-3,  # peak, reached after warmup_epochs
        "lr_end": 1.0e-6,  # end of the cosine decay
        "warmup_epochs": 15.0,  # linear warm-up from lr_start to lr
        "betas": [0.9, 0.999],  # AdamW betas
        # torch.compile (never changes the math): auto = blocks on CUDA, none elsewhere; blocks = regional compile
        # of the stems, trunk and predictor blocks; model = the whole training forward on top of that (fastest
        # on one H200, compiles longest: BENCHMARKS.md); none = eager
        "compile": "auto",
        # a NaN / inf loss term or gradient norm: stop (default; checked without a per-step host sync) or skip
        # the step (one sync per step) and stop after max_skipped_steps skipped steps (crjepa/train/guards.py)
        "nonfinite": "stop",
        "max_skipped_steps": 10,  # with nonfinite: skip, stop after this many skipped steps
        # recompute each trunk / predictor block's activations in the backward pass instead of storing them
        # (model.gradient_checkpointing_enable(): less memory, ~30% more compute, same numbers)
        "gradient_checkpointing": False,
    },
    "eval": {
        "query_split": "test",  # queries come from this split
        "gallery_split": None,  # null: the query split is the gallery too (self-matches removed)
        "k": 5,  # cut-off of F1@k / P@k
        "batch_size": 256,  # images per forward pass when embedding
        "every_epochs": None,  # evaluate every N epochs (null: only at the end)
        "every_steps": None,  # evaluate every N optimiser steps
        "before_training": True,  # score the randomly initialised model too (printed next to the trained one)
    },
    "checkpoint": {
        "every_steps": 500,  # null or 0: no intermediate checkpoints (the last step is always saved)
        "keep_last": 2,  # complete checkpoints kept
    },
    "logging": {
        "every_steps": 10,  # log the loss terms every N optimiser steps
        "report_to": "tensorboard",  # tensorboard | trackio | wandb | none, or a list
        "project_name": "crjepa",  # tracker project name
        "progress_bar": True,  # tqdm bar on the main process
    },
    "embeddings": {
        "write": True,  # write the embeddings data set (Parquet) and faiss index of `split`
        "split": "test",  # the split whose embeddings are written
        "index": "auto",  # faiss index kind: auto | exact | hnsw | ivfpq
    },
    "hub": {
        "push_to_hub": False,  # upload output_dir/model to hub_model_id at the end
        "hub_model_id": None,  # user/name of the model repo
        "push_embeddings": False,  # upload the embeddings archive to hub_embeddings_id
        "hub_embeddings_id": None,  # user/name of the embeddings dataset repo
        "private": False,  # create the Hub repos as private
        "encoder_only": False,  # push CRJepaModel alone (stems, trunk, heads: what retrieval needs), no predictors
    },
}

RANGES: dict[str, tuple[str, float, float, bool]] = {
    # key: (kind, low, high, nullable); kind "int" (no fractions, no booleans) or "number" (finite)
    "seed": ("int", 0, 2**32 - 1, False),
    "data.batch_size": ("int", 1, 1 << 20, False),
    "data.num_workers": ("int", 0, 1024, False),
    "training.epochs": ("number", 1e-9, 1e6, False),
    "training.max_steps": ("int", 1, 2**62, True),
    "training.gradient_accumulation_steps": ("int", 1, 1 << 16, False),
    "training.max_grad_norm": ("number", 1e-12, math.inf, False),
    "training.weight_decay": ("number", 0, math.inf, False),
    "training.lr_start": ("number", 0, math.inf, False),
    "training.lr": ("number", 0, math.inf, False),
    "training.lr_end": ("number", 0, math.inf, False),
    "training.warmup_epochs": ("number", 0, 1e6, False),
    "training.max_skipped_steps": ("int", 0, 2**62, False),
    "eval.k": ("int", 1, 1 << 20, False),
    "eval.batch_size": ("int", 1, 1 << 20, False),
    "eval.every_epochs": ("int", 0, 2**62, True),
    "eval.every_steps": ("int", 0, 2**62, True),
    "checkpoint.every_steps": ("int", 0, 2**62, True),
    "checkpoint.keep_last": ("int", 1, 1 << 20, False),
    "logging.every_steps": ("int", 1, 2**62, False),
}
"""Type and range of every numeric key (checked with the rest of the configuration, before anything runs): a value
that passed the key check used to fail after a step or a whole epoch (``logging.every_steps 0``, ``eval.k 0``) or
deep in a library (``data.batch_size 32.5``)."""
TEXT_KEYS = ("output_dir", "data.train_split", "eval.query_split", "embeddings.split", "logging.project_name")
"""Keys that must be non-empty strings."""
OPTIONAL_TEXT_KEYS = (
    "data.path",
    "data.name",
    "data.hub_id",
    "eval.gallery_split",
    "hub.hub_model_id",
    "hub.hub_embeddings_id",
)
INDEX_KINDS = ("auto", "exact", "hnsw", "ivfpq")

COMPILE_MODES = ("auto", "none", "blocks", "model")
"""training.compile: see DEFAULTS (applied by `crjepa.train.compile.compile_for_training`)."""


class ConfigError(CRJepaError, ValueError):
    """A run configuration a person must fix (unknown key, wrong type, missing value)."""


# ---------------------------------------------------------------------------------------------- configuration
def model_fields() -> list[str]:
    """The keys the ``model`` section may set besides architecture and preset: the config fields of CR-JEPA and
    of the baselines (crjepa.baselines.models registers them)."""
    from crjepa.baselines.models import model_fields as all_model_fields

    return [name for name in all_model_fields() if name not in DEFAULTS["model"]]


def valid_keys() -> list[str]:
    """Every dotted key a configuration may set."""
    keys = []

    def walk(tree: dict[str, Any], prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict) and f"{prefix}{key}" not in FREE_FORM:
                walk(value, f"{prefix}{key}.")
            else:
                keys.append(f"{prefix}{key}")

    walk(DEFAULTS, "")
    return keys + [f"model.{name}" for name in model_fields()]


def _is_valid(key: str) -> bool:
    return key in valid_keys() or any(key.startswith(f"{f}.") for f in FREE_FORM)


def resolve_key(key: str) -> str:
    """A full dotted key from a dotted or bare one (``epochs`` -> ``training.epochs`` when unique)."""
    key = key.replace("-", "_") if not key.startswith("data.options.") else key
    if _is_valid(key):
        return key
    matches = [k for k in valid_keys() if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"Config key {key!r} is ambiguous: write one of {matches}")
    raise unknown_key_error(key)


def unknown_key_error(key: str) -> ConfigError:
    keys = valid_keys()
    close = [k for k in keys if key.rsplit(".", 1)[-1] in k or k.rsplit(".", 1)[-1] in key.rsplit(".", 1)[-1]]
    hint = f" Did you mean {close[:3]}?" if close else ""
    return ConfigError(
        f"Unknown config key {key!r}.{hint} `python train_accelerate.py --help` lists every key with its default"
    )


def parse_scalar(text: str) -> Any:
    """A command-line value as a YAML scalar ('3' -> 3, 'true' -> True, 'null' -> None, '[1, 2]' -> list);
    numbers YAML 1.1 leaves as text ('1e-3') become floats."""
    value = yaml.safe_load(text) if text.strip() else ""
    return _numeric(value)


def _numeric(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)", value.strip()) else value
        except ValueError:
            return value
    return value


def parse_cli(argv: Sequence[str]) -> tuple[str | None, list[tuple[str, Any]]]:
    """``[--config FILE] [--key value | --flag] ...`` -> (config path, [(key, value)]).

    A ``--key`` followed by another ``--key`` (or nothing) is a flag set to true; ``--key=value`` works too.
    """
    config_path, pairs = None, []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"Unexpected argument {arg!r}: write options as --key value (e.g. --training.epochs 3)")
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i + 1 < len(args) and not (args[i + 1].startswith("--") and len(args[i + 1]) > 2):
                value, i = args[i + 1], i + 1
            else:
                value = "true"
        i += 1
        if key == "config":
            config_path = value
        else:
            pairs.append((key, parse_scalar(value)))
    return config_path, pairs


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Config key {dotted!r}: {part!r} is not a section")
        tree = node
    tree[parts[-1]] = value


def _flatten(tree: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in FREE_FORM:
            if not value and prefix == "" and key == "model":
                continue
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


EXTENDS_KEY = "extends"
"""A YAML file may start from a base file, named relative to its own folder (``extends: ../paper_ben14k.yaml``),
and set only what differs (configs/ablations/*.yaml do)."""


def read_config_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, mapping)] from the outermost ``extends:`` base down to ``path`` (each file's keys override its base)."""
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} not found" + (f" (extended by {seen[-1]})" if seen else ""))
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping of sections, found {type(loaded).__name__}")
    base = loaded.pop(EXTENDS_KEY, None)
    if base is None:
        return [(path, loaded)]
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"{path}: 'extends: {base}' makes a cycle ({' -> '.join(map(str, seen + (path,)))})")
    return read_config_chain(base_path, seen + (path.resolve(),)) + [(path, loaded)]


META_KEYS = ("config_file", "cli_keys")
"""Keys a loaded run configuration carries besides the sections: the YAML file it came from, and the dotted keys
set on the command line (what the user chose explicitly, e.g. data.name)."""


def resolve_config_path(config_path: str | os.PathLike | None) -> Path:
    """The YAML file of ``--config``: the path as given when it exists, else the copy packaged with crjepa
    (``paper_ben14k.yaml``, ``configs/paper_ben14k.yaml`` and ``ablations/x.yaml`` all work after a plain
    ``pip install``), else a ConfigError listing the packaged configurations."""
    if config_path is None:
        return DEFAULT_CONFIG
    path = Path(config_path).expanduser()
    if path.is_file():
        return path
    name = Path(*path.parts[1:]) if path.parts and path.parts[0] == "configs" else path
    if not path.is_absolute():
        try:
            return resource_file("configs", str(name))
        except FileNotFoundError:
            pass
    available = ", ".join(packaged_configs())
    raise ConfigError(f"Config file {str(config_path)!r} not found (nor among crjepa's packaged configs: {available})")


def packaged_configs() -> list[str]:
    """The run configurations that travel with crjepa, relative to configs/ (e.g. ``ablations/head_single.yaml``)."""
    from crjepa.utils.resources import resource_dir

    root = resource_dir("configs")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def load_run_config(
    config_path: str | os.PathLike | None = None, overrides: Sequence[tuple[str, Any]] = ()
) -> RunConfig:
    """DEFAULTS <- YAML file (default configs/cpu_default.yaml) <- overrides; checked, with numbers coerced."""
    path = resolve_config_path(config_path)
    config = copy.deepcopy(DEFAULTS)
    for file, loaded in read_config_chain(path):  # the outermost base first (``extends:``), then each child
        for key, value in _flatten(loaded):
            if not _is_valid(key):
                raise ConfigError(f"{file}: " + str(unknown_key_error(key)))
            _set(config, key, _numeric(value))
    cli_keys = []
    for key, value in overrides:
        cli_keys.append(resolve_key(key))
        _set(config, cli_keys[-1], value)
    config["config_file"] = str(path)
    config["cli_keys"] = cli_keys
    check_run_config(config)
    return config


def check_run_config(config: RunConfig) -> None:
    """Types and ranges of the run configuration, all problems in one error."""
    errors = []
    if config["training"]["mixed_precision"] is False:  # YAML 1.1 reads a bare `no` as false
        config["training"]["mixed_precision"] = "no"
    flat = dict(_flatten({k: v for k, v in config.items() if k not in META_KEYS}))
    for key, default in _flatten(DEFAULTS):
        value = flat.get(key)
        if value is None or default is None:
            continue
        if isinstance(default, bool):
            if not isinstance(value, bool):
                errors.append(f"{key} must be true or false, found {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            _set(config, key, float(value))
        elif (
            key not in RANGES
            and isinstance(default, (int, float))
            and not (isinstance(value, (int, float)) and not isinstance(value, bool))
        ):
            errors.append(f"{key} must be a number, found {value!r}")
    errors += _range_errors(flat)
    training, data = config["training"], config["data"]
    if config["model"].get("preset") not in PRESETS:
        errors.append(f"model.preset must be one of {sorted(PRESETS)}, found {config['model'].get('preset')!r}")
    if not isinstance(data["extra_sources"] or {}, dict):
        errors.append(f"data.extra_sources must map names to exported folders, found {data['extra_sources']!r}")
    if data["pair_share"] is not None and not (
        isinstance(data["pair_share"], (int, float))
        and not isinstance(data["pair_share"], bool)
        and 0 < data["pair_share"] < 1
    ):
        errors.append(
            f"data.pair_share must be a number between 0 and 1 (exclusive) or null, found {data['pair_share']!r}"
        )
    if data["mix"] is not None and not (isinstance(data["mix"], dict) and data["extra_sources"]):
        errors.append(f"data.mix must be {{name: share}} and needs data.extra_sources, found {data['mix']!r}")
    elif isinstance(data["mix"], dict) and not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in data["mix"].values()
    ):
        errors.append(f"data.mix shares must be numbers in (0, 1], found {data['mix']!r}")
    if not isinstance(data["options"] or {}, dict):
        errors.append(f"data.options must be a mapping of the data source's options, found {data['options']!r}")
    elif data["path"] is None and str(data["source"]) == "synthetic":
        from crjepa.data.schema import DataError, check_synthetic_options

        try:
            check_synthetic_options(data["options"] or {}, where="data.options")
        except DataError as exc:
            errors.append(str(exc))
    betas = training["betas"]
    if not (
        isinstance(betas, (list, tuple))
        and len(betas) == 2
        and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        errors.append(f"training.betas must be two numbers in [0, 1) (AdamW's beta1, beta2), found {betas!r}")
    if training["mixed_precision"] not in (None, "no", "fp16", "bf16", "fp8"):
        errors.append(f"training.mixed_precision must be no, fp16, bf16 or null, found {training['mixed_precision']!r}")
    if training["nonfinite"] not in ("stop", "skip"):
        errors.append(f"training.nonfinite must be stop or skip, found {training['nonfinite']!r}")
    if training["compile"] not in COMPILE_MODES:
        errors.append(f"training.compile must be one of {list(COMPILE_MODES)}, found {training['compile']!r}")
    if config["embeddings"]["index"] not in INDEX_KINDS:
        errors.append(f"embeddings.index must be one of {list(INDEX_KINDS)}, found {config['embeddings']['index']!r}")
    for key in TEXT_KEYS + OPTIONAL_TEXT_KEYS:
        value = flat.get(key)
        if (value is not None or key in TEXT_KEYS) and not (isinstance(value, str) and value.strip()):
            errors.append(f"{key} must be a non-empty string{'' if key in TEXT_KEYS else ' or null'}, found {value!r}")
    from crjepa.hub.access import is_repo_id

    for key in ("data.hub_id", "hub.hub_model_id", "hub.hub_embeddings_id"):
        if flat.get(key) is not None and not is_repo_id(flat[key]):
            errors.append(f"{key} must be a Hub repo id like user/name (letters, digits, - _ .), found {flat[key]!r}")
    report = config["logging"]["report_to"]
    if not (isinstance(report, str) or isinstance(report, list) and all(isinstance(r, str) for r in report)):
        errors.append(f"logging.report_to must be a tracker name or a list of them, found {report!r}")
    hub = config["hub"]
    if hub["push_to_hub"] and not hub["hub_model_id"]:
        errors.append("hub.push_to_hub needs --hub_model_id user/name")
    if hub["push_embeddings"] and not hub["hub_embeddings_id"]:
        errors.append("hub.push_embeddings needs --hub_embeddings_id user/name")
    if errors:
        raise ConfigError("Invalid training configuration:\n  - " + "\n  - ".join(errors))


def _range_errors(flat: dict[str, Any]) -> list[str]:
    """One message per key of `RANGES` whose value has the wrong type or lies outside its range."""
    errors = []
    for key, (kind, low, high, nullable) in RANGES.items():
        value = flat.get(key)
        if value is None and nullable:
            continue
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            number = value
        whole = number is not None and (isinstance(number, int) or kind == "number")
        if number is None or not whole or not low <= number <= high:
            what = "an integer" if kind == "int" else "a number"
            bounds = f"in [{_shown(low)}, {_shown(high)}]" if high < 2**40 else f">= {_shown(low)}"
            errors.append(f"{key} must be {what} {bounds}{' or null' if nullable else ''}, found {value!r}")
    return errors


def _shown(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def build_model_config(config: RunConfig) -> CRJepaConfig:
    """The model config of a run: ``model.architecture`` and ``model.preset`` plus every other ``model`` key."""
    from crjepa.baselines.models import build_config

    overrides = {k: v for k, v in config["model"].items() if k not in DEFAULTS["model"]}
    try:
        return build_config(config["model"]["architecture"], config["model"]["preset"], **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid model settings {overrides}: {exc}") from exc


def key_docs() -> dict[str, str]:
    """Dotted key -> its one-line description, read from the comments of `DEFAULTS` in this file's source (the
    schema is documented once, where it is defined; a comment block above a key describes that key)."""
    import inspect

    source = inspect.getsource(sys.modules[__name__]).split("DEFAULTS: dict[str, Any] = {", 1)[1]
    docs: dict[str, str] = {}
    stack: list[str] = []
    pending: list[str] = []
    for line in source.splitlines():
        text = line.strip()
        if not stack and text == "}":
            break
        match = re.match(r'"([A-Za-z_]+)":\s*(.*?)(?:\s*#\s*(.*))?$', text)
        if text.startswith("#"):
            pending.append(text.lstrip("# ").strip())
        elif match:
            key, value, comment = match.groups()
            dotted = ".".join([*stack, key])
            if value == "{" or (value.startswith("{") and not value.rstrip(",").endswith("}")):
                stack.append(key)
            else:
                docs[dotted] = " ".join(pending + [comment or ""]).strip()
            pending = []
        elif text.startswith("}"):
            stack = stack[:-1]
            pending = []
    return docs


def config_help(config_path: str | os.PathLike | None = None) -> str:
    """`train_accelerate.py --help`: usage, then every config key with its default (DEFAULTS, or the values of
    ``config_path`` when given) and one line, generated from the schema, plus the model fields and packaged configs."""
    docs = key_docs()
    values = dict(_flatten(DEFAULTS))
    if config_path is not None:
        loaded = load_run_config(config_path)
        values = dict(_flatten({k: v for k, v in loaded.items() if k not in META_KEYS}))
    configs = packaged_configs()
    top = [c for c in configs if "/" not in c]
    folders = sorted({c.split("/")[0] for c in configs if "/" in c})
    lines = [
        "usage: accelerate launch -m train_accelerate [--config FILE] [--KEY VALUE ...]",
        "       (any folder; from a checkout also: accelerate launch train_accelerate.py ...)",
        "",
        "Train CR-JEPA, evaluate the four retrieval directions, save model + card + embeddings.",
        "--config FILE: a YAML run configuration, a path or one packaged with crjepa (default cpu_default.yaml):",
        "  " + ", ".join(top),
    ]
    for folder in folders:
        lines.append(f"  {folder}/: " + ", ".join(c.split("/", 1)[1] for c in configs if c.startswith(folder + "/")))
    lines += [
        "Any key below is an option: --training.epochs 3, or a bare name when unique (--epochs 3); values are",
        "YAML scalars (true, null, 1e-3, [0.9, 0.99]).",
        "",
        "config keys (defaults" + (f" of {config_path}" if config_path else "") + "):",
    ]
    for key in [k for k in valid_keys() if not k.startswith("model.") or k in docs]:
        value = values.get(key, DEFAULTS.get(key))
        shown = yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
        doc = docs.get(key) or ""
        if key == "model.preset":
            doc += f" ({', '.join(sorted(PRESETS))})"
        lines.append(f"  --{key} {shown}" + (f"    {doc}" if doc else ""))
    lines.append(
        "  --model.<field> VALUE    any CR-JEPA / baseline config field overrides the preset: "
        + ", ".join(model_fields())
    )
    return "\n".join(lines)


def report_to(config: RunConfig) -> list[str]:
    """The trackers to log to (``none`` -> [])."""
    value = config["logging"]["report_to"]
    names = [value] if isinstance(value, str) else list(value or [])
    return [n for n in names if n and n != "none"]


__all__ = [
    "COMPILE_MODES",
    "DEFAULTS",
    "DEFAULT_CONFIG",
    "INDEX_KINDS",
    "META_KEYS",
    "RANGES",
    "ConfigError",
    "RunConfig",
    "build_model_config",
    "check_run_config",
    "config_help",
    "key_docs",
    "load_run_config",
    "model_fields",
    "packaged_configs",
    "parse_cli",
    "parse_scalar",
    "read_config_chain",
    "report_to",
    "resolve_config_path",
    "resolve_key",
    "valid_keys",
]
