"""The data of a run, checked before anything trains: the data set (`load_data`: the model's sensors both ways,
channel counts, each sensor present in some row) and how its training rows are paired (`check_pairing`).

Which rows one epoch draws, and in which order, is `crjepa.train.sampler`'s; the checks of the evaluation splits
are `crjepa.train.evaluation.check_evaluation_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crjepa.errors import CRJepaError
from crjepa.train.config import ConfigError, RunConfig
from crjepa.train.sampler import distinct_rows

if TYPE_CHECKING:
    from collections.abc import Callable

    from datasets import Dataset

    from modeling_crjepa.configuration_crjepa import CRJepaConfig

__all__ = ["EXTRA_MODULES", "Pairing", "check_pairing", "load_data"]

EXTRA_MODULES = ("rasterio", "h5py", "bigearthnet_common", "lmdb")
"""Modules of the ``bigearthnet`` extra that the builders of raw data import when they read."""


def load_data(config: RunConfig, model_config: CRJepaConfig) -> Dataset:
    """The paired data set, checked against the model's sensors (names both ways, channel counts, each sensor
    present in some row) before any training.

    ``data.path`` set: the data is that exported Parquet folder (`python -m datasets_scripts ...`), whatever
    ``data.source`` says (the source then only names the kind of data, e.g. ``bigearthnet``); ``data.options``
    go to a builder, never to an export. A ``--data.source`` on the command line without ``--data.path``
    replaces the YAML's path. Unset: ``data.source`` ("synthetic", an export folder, or a builder
    name) with ``data.options``. ``data.name`` defaults to the export's own name (its card's pretty_name), so
    the model card names the data actually trained on. A builder that needs a module of the ``bigearthnet``
    extra which is not installed is a ConfigError naming the install command.
    """
    from crjepa.data.loading import check_sensors, export_name, load_paired_dataset

    data = config["data"]
    cli_keys = config.get("cli_keys", ())
    if "data.source" in cli_keys and "data.path" not in cli_keys:
        data["path"] = None  # a source given on the command line replaces the YAML's path
    if data["path"] is not None:
        path = Path(str(data["path"])).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"data.path {str(data['path'])!r} is not a folder: pass --data.path with the folder "
                "`python -m datasets_scripts <dataset> ... --output-dir DIR` wrote"
            )
        dataset = load_paired_dataset(path)
        data["path"] = str(path.resolve())  # absolute: checkpoints and archives find the data from anywhere
        if "data.name" not in config.get("cli_keys", ()):
            data["name"] = export_name(path)
    else:
        try:
            dataset = load_paired_dataset(data["source"], **dict(data["options"] or {}))
        except TypeError as exc:  # an option the data source does not take
            raise ConfigError(
                f"data.options {dict(data['options'] or {})} do not fit the data source {data['source']!r}: {exc}"
            ) from None
        except CRJepaError:  # the builder's own one-sentence errors (e.g. MissingExtraError: an extra to install)
            raise
        except Exception as exc:  # the builder's reader lacks an extra (datasets wraps it in its own error)
            missing = _missing_extra(exc)
            if missing is None:
                raise
            raise ConfigError(
                f'{missing}: this data needs the bigearthnet extra: pip install "crjepa[bigearthnet]"'
            ) from None
    where = str(data["path"] or data["source"])
    # both directions: a config sensor the data lacks, or a data sensor the config lacks, stops the run here
    check_sensors(dataset, model_config.sensors, exact=True, where=where)
    return dataset


def _missing_extra(exc: BaseException) -> ImportError | None:
    """The ImportError of an `EXTRA_MODULES` module behind ``exc`` (itself, or what it was raised from), else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImportError) and getattr(seen, "name", None) in EXTRA_MODULES:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass
class Pairing:
    """Which sensors the training rows have: ``rows`` = `pairing_summary` (e.g. {"s1+s2": 900, "s2": 100}),
    ``partial`` = some row lacks a sensor (the objective then reads batch["present"]), ``unpaired`` = sensor
    pairs no training row has together (their cross routes, L_cross and L_uni stay 0: cross head untrained)."""

    rows: dict[str, int]
    partial: bool
    unpaired: list[tuple[str, str]]
    epoch_rows: dict[str, int] | None = None
    """The same counts over one epoch's draws when data.pair_share / data.mix repeat rows (else None): ``rows``
    counts each distinct row once."""

    @property
    def untrained_directions(self) -> list[str]:
        return [d for a, b in self.unpaired for d in (f"{a}->{b}", f"{b}->{a}")]


def check_pairing(
    train_set: Dataset, model_config: CRJepaConfig, architecture: str, name: str, say: Callable[..., None]
) -> Pairing:
    """How the training rows are paired; a baseline that needs every sensor in every row stops here (one error
    naming the counts), and sensor pairs without a single joint row are announced (the card repeats it)."""
    from itertools import combinations

    from crjepa.data.loading import pairing_summary, presence

    sensors = list(model_config.sensor_names)
    have = presence(train_set, sensors)
    distinct = distinct_rows(train_set)
    rows = pairing_summary(distinct, sensors)
    epoch_rows = pairing_summary(train_set, sensors) if len(distinct) != len(train_set) else None
    partial = not all(mask.all() for mask in have.values())
    unpaired = [(a, b) for a, b in combinations(sensors, 2) if not (have[a] & have[b]).any()]
    if partial and architecture != "crjepa":
        lacking = ", ".join(f"{int((~mask).sum()):,} lack {s!r}" for s, mask in have.items() if not mask.all())
        raise ConfigError(
            f"The {architecture} baseline needs every sensor in every training row, but of the "
            f"{len(train_set):,} training rows of {name}, {lacking}. Train it on the paired rows "
            "(re-export without --keep-unpaired, pairing_rate: 1), or use model.architecture: crjepa, "
            "whose objective uses the rows each term needs"
        )
    if partial:
        drawn = f" (each epoch draws {epoch_rows})" if epoch_rows else ""
        say(
            f"Training rows by sensors present: {rows}{drawn}; each loss term uses the rows that have its sensors "
            "(rows/<term> in the log)"
        )
    for a, b in unpaired:
        say(
            f"warning: no training row has both {a!r} and {b!r}: the routes {a}->{b} and {b}->{a}, L_cross and L_uni "
            f"for {a}-{b} stay 0, so the cross head is untrained for {a}<->{b} retrieval (the model card says so); "
            f"same-sensor training ({a}->{a}, {b}->{b}) and SIGReg proceed"
        )
    return Pairing(rows=rows, partial=partial, unpaired=unpaired, epoch_rows=epoch_rows)
