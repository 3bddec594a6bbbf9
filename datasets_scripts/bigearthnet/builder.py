"""The `datasets` builder of BigEarthNet-MM (`BigEarthNetMM`, one config per subset), its row schema, its
conversion report and its dataset card. The manual (layouts, rows, resampling, bad input) is the package's
docstring, datasets_scripts/bigearthnet/__init__.py."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from crjepa.data.schema import S1_BANDS, S2_BANDS, DataError  # the band orders' one home
from datasets_scripts.ben_metadata import BEN19_CLASSES, SPLITS, UNASSIGNED
from datasets_scripts.bigearthnet.layouts import ALL_SUBSETS
from datasets_scripts.bigearthnet.plans import ConversionPlan, plan_conversion
from datasets_scripts.bigearthnet.reading import (
    PATCH_SIZE,
    S2_RESAMPLINGS,
    BigEarthNetError,
    PairTask,
    read_pair,
    require_extra,
)
from datasets_scripts.bigearthnet.splits import SPLIT_PROTOCOLS, resplit

logger = logging.getLogger(__name__)

SUMMARY = "BigEarthNet-MM (Sentinel-1/Sentinel-2 pairs) as a Hugging Face `datasets` builder, BEN-14K included."
"""What the data set is, in one sentence (the builder's description, the CLI's)."""


def features(s2_only: bool = False) -> datasets.Features:
    """Row schema of docs/CONTRACTS.md for BigEarthNet-MM (without the `s1` column for an S2-only archive)."""
    string = datasets.Value("string")
    feats = datasets.Features(
        {
            "id": string,
            "s1": datasets.Array3D(shape=(len(S1_BANDS), PATCH_SIZE, PATCH_SIZE), dtype="float32"),
            "s2": datasets.Array3D(shape=(len(S2_BANDS), PATCH_SIZE, PATCH_SIZE), dtype="uint16"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=list(BEN19_CLASSES))),
            "split": string,
            "s1_name": string,
            "s2_name": string,
            "country": string,
            "s2_date": string,
            "tile": string,
            "labels_43": datasets.Sequence(string),
        }
    )
    if s2_only:
        del feats["s1"]
    return feats


@dataclass
class ConversionReport:
    """Outcome of a build: converted rows per split, missing pairs of the subset, skipped pairs with reasons."""

    subset: str
    subset_size: int
    converted: dict[str, int]
    missing: int
    skipped: dict[str, BigEarthNetError]
    single_sensor: int = 0
    s2_only: bool = False

    def summary(self) -> str:
        """One line for people: converted N pairs (or S2 patches), missing M of the subset, skipped K (with
        reasons). An S2-only archive counts patches, not pairs; subset `all` (every pair found on disk) has no
        list to be missing from, so nothing is reported missing."""
        total = sum(self.converted.values())
        per_split = ", ".join(f"{s} {n:,}" for s, n in self.converted.items())
        reasons = Counter(err.reason for err in self.skipped.values())
        why = f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})" if reasons else ""
        kept = f", {self.single_sensor:,} of them single-sensor rows" if self.single_sensor and not self.s2_only else ""
        unit = "S2 patches" if self.s2_only else "pairs"
        found = f"converted {total:,} {unit} ({per_split}{kept}), "
        if self.subset == "all":
            found += f"every {'S2 patch' if self.s2_only else 'pair'} found on disk"
        else:
            found += f"missing {self.missing:,} of the {self.subset_size:,} {unit} of the subset"
        return f"bigearthnet {self.subset}: {found}, skipped {len(self.skipped):,}{why}"


@dataclass
class BigEarthNetConfig(datasets.BuilderConfig):
    """One subset of BigEarthNet-MM; the name is the subset (ben14k, recommended, all, reben)."""

    s1_dir: str | None = None
    s2_dir: str | None = None
    reben_metadata: str | None = None
    lmdb: str | None = None
    strict: bool = False
    s2_resampling: str = "nearest"
    keep_unpaired: bool = False
    split_by: str = "official"
    block_km: float = 50.0
    split_seed: int = 0
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)

    @property
    def s2_only(self) -> bool:
        """An S2-only archive: S2 folders without S1 ones (an LMDB always holds both sensors)."""
        return not (self.s1_dir or self.lmdb)


_DESCRIPTIONS = {
    "ben14k": "CR-JEPA's BEN-14K: Serbia, S2 date <= 2017-08-31, minus official exclusions (14,832 pairs).",
    "recommended": "The official 519,284 BigEarthNet v1 pairs (all minus snow, cloud/shadow, no 19-class label).",
    "all": "Every BigEarthNet v1 S1/S2 pair found on disk; official split where one exists, else unassigned.",
    "reben": "reBEN (BigEarthNet v2) pairs listed in its metadata.parquet, with its split.",
}


class BigEarthNetMM(datasets.GeneratorBasedBuilder):
    """BigEarthNet-MM S1/S2 pairs at native 10 m grid (120x120), 19-class multi-labels, official splits."""

    BUILDER_CONFIG_CLASS = BigEarthNetConfig
    BUILDER_CONFIGS = [BigEarthNetConfig(name=name, description=_DESCRIPTIONS[name]) for name in ALL_SUBSETS]
    DEFAULT_CONFIG_NAME = "ben14k"
    DEFAULT_WRITER_BATCH_SIZE = 100  # rows are ~460 kB: keep writer memory small
    CITATION = (
        "@article{sumbul2021bigearthnetmm, title={BigEarthNet-MM: A Large-Scale, Multimodal, Multilabel Benchmark "
        "Archive for Remote Sensing Image Classification and Retrieval}, author={Sumbul, Gencer and others}, "
        "journal={IEEE Geoscience and Remote Sensing Magazine}, year={2021}}"
    )

    def __init__(self, *args: Any, subset: str | None = None, **kwargs: Any) -> None:
        if subset is not None:
            if kwargs.get("config_name") not in (None, subset):
                raise DataError(f"subset={subset!r} and config_name={kwargs['config_name']!r} disagree")
            kwargs["config_name"] = subset
        for key in ("s1_dir", "s2_dir", "reben_metadata", "lmdb"):  # absolute strings: stable, readable cache ids
            if kwargs.get(key) is not None:
                kwargs[key] = str(Path(kwargs[key]).expanduser().resolve())
        kwargs.setdefault("dataset_name", "bigearthnet")  # the name of its files and caches (not this module's)
        super().__init__(*args, **kwargs)
        if self.config.s2_resampling not in S2_RESAMPLINGS:
            raise DataError(f"s2_resampling must be one of {S2_RESAMPLINGS}, got {self.config.s2_resampling!r}")
        if self.config.split_by not in SPLIT_PROTOCOLS:
            raise DataError(f"split_by must be one of {SPLIT_PROTOCOLS}, got {self.config.split_by!r}")
        self._plan: ConversionPlan | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Do not ship the whole plan to every worker: each gets its shard of tasks through gen_kwargs."""
        state = dict(super().__getstate__())
        state["_plan"] = None
        return state

    def plan(self) -> ConversionPlan:
        """The conversion plan (cached); in strict mode a pair unusable before reading raises here."""
        if self._plan is None:
            c = self.config
            self._plan = resplit(
                plan_conversion(c.name, c.s1_dir, c.s2_dir, c.reben_metadata, c.keep_unpaired, c.lmdb),
                c.split_by,
                c.block_km,
                c.split_seed,
                tuple(c.split_fractions),
            )
        if self.config.strict and self._plan.skipped:
            raise next(iter(self._plan.skipped.values()))
        return self._plan

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTIONS.get(self.config.name, "") + " " + SUMMARY,
            features=features(s2_only=self.config.s2_only),
            homepage="https://bigearth.net",
            license="CDLA-Permissive-1.0",
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager: datasets.DownloadManager) -> list[datasets.SplitGenerator]:
        require_extra("lmdb" if self.config.lmdb else "rasterio")  # its reader, before any patch is planned or read
        plan = self.plan()
        missing = "" if plan.subset == "all" else f", {len(plan.missing):,} missing"  # `all` has no list to miss
        unit = "S2 patches" if self.config.s2_only else "pairs"
        logger.info(
            "BigEarthNet %s: %s %s to convert%s, %s skipped before reading",
            plan.subset,
            f"{len(plan.tasks):,}",
            unit,
            missing,
            f"{len(plan.skipped):,}",
        )
        for err in plan.skipped.values():
            logger.warning("skipped: %s", err)
        by_split: dict[str, list[PairTask]] = {}
        for task in plan.tasks:
            by_split.setdefault(task["split"], []).append(task)
        order = [s for s in (*SPLITS, UNASSIGNED) if s in by_split]
        return [datasets.SplitGenerator(name=s, gen_kwargs={"tasks": by_split[s]}) for s in order]

    def _generate_examples(self, tasks: list[PairTask]) -> Iterator[tuple[str, dict[str, Any]]]:
        for task in tasks:
            try:
                row = read_pair(task, self.config.s2_resampling)
            except BigEarthNetError as err:
                if self.config.strict:
                    raise
                logger.warning("skipped: %s", err)
                continue
            yield task["s2_name"], row

    def as_dataset(
        self, split: str | datasets.Split | None = None, **kwargs: Any
    ) -> datasets.Dataset | datasets.DatasetDict:
        """As `datasets`, but a split left empty (every pair of it skipped) is dropped instead of failing."""
        if split is None and self.info.splits:
            kept = [name for name, info in self.info.splits.items() if info.num_examples]
            if len(kept) != len(self.info.splits):
                base = datasets.GeneratorBasedBuilder.as_dataset  # (a comprehension has no zero-argument super)
                return datasets.DatasetDict({name: base(self, split=name, **kwargs) for name in kept})
        return super().as_dataset(split=split, **kwargs)

    def conversion_report(
        self, dataset: datasets.DatasetDict | None = None, written_ids: set[str] | None = None
    ) -> ConversionReport:
        """Converted/missing/skipped counts of the prepared dataset, with a reason for every skipped pair.

        Pairs planned but absent from the output (`dataset`, or the ids of an export given as `written_ids`)
        were skipped while reading; only those are re-read here to recover the reason, which also works when
        the dataset came from the cache.
        """
        plan = self.plan()
        if written_ids is None:
            dataset = dataset if dataset is not None else self.as_dataset()
            written_ids = {i for ds in dataset.values() for i in ds["id"]}
        by_split = Counter(t["split"] for t in plan.tasks if t["s2_name"] in written_ids)
        converted = {s: by_split[s] for s in (*SPLITS, UNASSIGNED) if by_split[s]}
        skipped = dict(plan.skipped)
        for task in plan.tasks:
            if task["s2_name"] not in written_ids:
                try:
                    read_pair(task, self.config.s2_resampling)
                    skipped[task["s2_name"]] = BigEarthNetError("not written", f"pair {task['s2_name']} not written")
                except BigEarthNetError as err:
                    skipped[task["s2_name"]] = err
        single = sum(1 for t in plan.tasks if t["s2_name"] in written_ids and not (t["s1_folder"] and t["s2_folder"]))
        return ConversionReport(
            plan.subset, plan.subset_size, converted, len(plan.missing), skipped, single, s2_only=self.config.s2_only
        )


def dataset_card(config: BigEarthNetConfig) -> dict[str, Any]:
    """Card fields for `datasets_scripts.common.export_builder`: what the data is and how it was made."""
    if config.s2_only:
        return {
            "pretty_name": f"BigEarthNet-S2 ({config.name})",
            "license": "cdla-permissive-1.0",
            "tags": ["bigearthnet", "sentinel-2", "multi-label"],
            "description": (
                f"Sentinel-2 patches only (no Sentinel-1 partner): {_DESCRIPTIONS[config.name]} `s2` (B01,B02,B03,"
                "B04,B05,B06,B07,B08,B8A,B09,B11,B12 uint16 L2A reflectance) on the 120x120 10 m grid; 20 m / 60 m "
                f"bands upsampled with {config.s2_resampling} resampling. Labels: BigEarthNet-19 nomenclature. "
                "For same-sensor (S2->S2) retrieval: `crjepa embed`, `index`, `search`, `evaluate`."
            ),
            "source": "BigEarthNet v1 / reBEN, https://bigearth.net (converted with `python -m datasets_scripts "
            "bigearthnet` without --s1-dir)",
            "citation": BigEarthNetMM.CITATION,
        }
    return {
        "pretty_name": f"BigEarthNet-MM ({config.name})",
        "license": "cdla-permissive-1.0",
        "tags": ["bigearthnet", "sentinel-1", "sentinel-2", "multi-label"],
        "description": (
            f"{_DESCRIPTIONS[config.name]} Sentinel-1 `s1` (VV,VH float32 dB) and Sentinel-2 `s2` (B01,B02,B03,"
            "B04,B05,B06,B07,B08,B8A,B09,B11,B12 uint16 L2A reflectance) on the 120x120 10 m grid; 20 m / 60 m "
            f"bands upsampled with {config.s2_resampling} resampling. Labels: BigEarthNet-19 nomenclature "
            "(`labels_43` keeps the original CORINE names)."
        ),
        "source": "BigEarthNet v1 / reBEN, https://bigearth.net (converted with `python -m datasets_scripts "
        "bigearthnet`" + (" from the ConfigILM LMDB)" if config.lmdb else ")"),
        "citation": BigEarthNetMM.CITATION,
    }
