"""Built-in synthetic Sentinel-1 / Sentinel-2 pairs: the default data set, shipped as code (no files).

Why: the quick start, the CPU default training run and the tests need paired data that behaves like the real
thing without a download. Each scene is a random land-cover map over the 19 BigEarthNet classes (a warped
power diagram of 8 regions drawn from 1-5 classes); its multi-labels are the classes covering more than
``min_fraction`` of the scene. The two sensors render the SAME map with DIFFERENT physics, so cross-modal
retrieval is genuinely harder than same-modal:

- S2-like optical (12 L2A bands B01..B12 in BigEarthNet order, uint16 reflectance x 10,000): per-class
  spectra (water dark in NIR/SWIR, vegetation red edge, bright sand and urban), per-region brightness and
  vigour, class-dependent texture, haze in the blue bands, ~1 % sensor noise.
- S1-like SAR (VV, VH backscatter in dB, float32): per-class sigma0 (urban double bounce: high VV; water:
  specular, darkest; forest volume scattering: high VH), per-region soil moisture / roughness that the
  optical image does not show, bright point scatterers in built-up areas, an incidence-angle gradient and
  multiplicative Gamma speckle (4.5 looks) applied in linear power before conversion to dB.

Partially paired archives: ``pairing_rate`` (e.g. 0.25) keeps that share of the TRAIN rows paired; the others
are kept as single-sensor rows, half S1-only and half S2-only (the other sensor's value is null). Evaluation
splits stay fully paired so every retrieval direction can be scored. Which rows lose which sensor is drawn from
(seed, split), independently of the pixels, so the images of a row do not change with the rate.

Everything is deterministic from ``seed``: pairs are drawn in blocks of 256, each seeded by (seed, split,
block), so ``generate(n)`` is a prefix of ``generate(m)`` for n < m and the builder can shard blocks over
processes without changing a single pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np

from crjepa.data.schema import S1_BANDS, S2_BANDS  # noqa: F401  (the band orders' one home)

from .ben_metadata import BEN19_CLASSES
from .common import SPLITS, SensorSpec, paired_features

BLOCK = 256
"""Pairs per independently seeded block."""
DEFAULT_SIZES: dict[str, int] = {"train": 2000, "validation": 500, "test": 500}
DEFAULT_IMAGE_SIZE = 32
"""Default side in pixels: the tiny CPU model's input size, so the default run needs no resize (BigEarthNet's
native 120 works too: ``image_size=120``)."""
MIN_FRACTION = 0.05
NUM_REGIONS = 8
SAR_LOOKS = 4.5
_SPLIT_CODE = {s: i for i, s in enumerate(SPLITS)}

# Relative frequency of each class in a scene (roughly BigEarthNet's: arable land, forests and pastures common).
_PRIOR = np.array([9, 3, 16, 4, 9, 10, 10, 2, 9, 10, 10, 3, 3, 10, 1, 2, 1, 3, 6], dtype=np.float64)

# Mean L2A reflectance x 10,000 per class and band (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12).
_S2_SPECTRA = np.array(
    [
        [1100, 1200, 1350, 1450, 1600, 1750, 1850, 1950, 2000, 1900, 2300, 2100],  # urban fabric
        [1400, 1550, 1700, 1800, 1900, 2000, 2100, 2150, 2200, 2100, 2500, 2300],  # industrial / commercial
        [700, 800, 1100, 1300, 1600, 2000, 2300, 2500, 2600, 2500, 2900, 2200],  # arable land
        [450, 550, 850, 800, 1300, 2300, 2700, 2900, 3000, 2900, 2300, 1400],  # permanent crops
        [350, 450, 800, 600, 1200, 2600, 3100, 3300, 3400, 3300, 2200, 1200],  # pastures
        [550, 650, 950, 950, 1400, 2300, 2700, 2900, 3000, 2900, 2500, 1700],  # complex cultivation
        [450, 550, 850, 750, 1200, 2300, 2800, 3000, 3100, 3000, 2100, 1200],  # agriculture + natural vegetation
        [400, 500, 750, 650, 1100, 2200, 2700, 2900, 3000, 2900, 2000, 1100],  # agro-forestry
        [300, 350, 600, 350, 900, 2500, 3200, 3400, 3500, 3400, 1800, 900],  # broad-leaved forest
        [250, 280, 450, 250, 650, 1700, 2100, 2300, 2400, 2300, 1100, 500],  # coniferous forest
        [280, 320, 520, 300, 780, 2100, 2650, 2850, 2950, 2850, 1450, 700],  # mixed forest
        [500, 600, 900, 1000, 1400, 2000, 2300, 2500, 2600, 2500, 2700, 1900],  # natural grassland
        [350, 400, 600, 550, 900, 1700, 2000, 2200, 2300, 2200, 1900, 1100],  # moors, heathland
        [350, 400, 650, 500, 1000, 2200, 2700, 2900, 3000, 2900, 1900, 1000],  # transitional woodland
        [1800, 2000, 2400, 2800, 3000, 3100, 3200, 3300, 3400, 3300, 3800, 3300],  # beaches, dunes, sands
        [300, 400, 600, 500, 800, 1500, 1800, 1900, 2000, 1900, 1200, 600],  # inland wetlands
        [400, 500, 700, 650, 850, 1300, 1500, 1600, 1650, 1600, 1000, 600],  # coastal wetlands
        [500, 550, 600, 400, 350, 300, 280, 250, 240, 200, 100, 70],  # inland waters
        [600, 500, 400, 250, 200, 150, 140, 120, 110, 100, 50, 30],  # marine waters
    ],
    dtype=np.float32,
)

# Mean sigma0 in dB per class (VV, VH).
_S1_SIGMA0 = np.array(
    [
        [-5.0, -12.0],
        [-3.5, -11.0],
        [-11.0, -18.0],
        [-9.0, -16.0],
        [-11.0, -18.5],
        [-10.0, -17.0],
        [-9.5, -16.0],
        [-8.5, -15.0],
        [-7.5, -13.0],
        [-8.0, -13.5],
        [-7.8, -13.2],
        [-12.0, -19.0],
        [-11.0, -17.5],
        [-9.0, -15.0],
        [-18.0, -26.0],
        [-10.0, -18.0],
        [-12.0, -20.0],
        [-21.0, -28.0],
        [-17.0, -25.0],
    ],
    dtype=np.float32,
)

# Texture amplitude: relative (optical) and in dB (SAR); probability of a bright point scatterer per pixel.
_S2_TEXTURE = np.array(
    [0.25, 0.2, 0.12, 0.15, 0.08, 0.18, 0.15, 0.15, 0.1, 0.1, 0.1, 0.1, 0.12, 0.15, 0.06, 0.1, 0.1, 0.04, 0.03],
    dtype=np.float32,
)
_S1_TEXTURE = np.array(
    [2.5, 2.0, 1.2, 1.2, 0.8, 1.5, 1.3, 1.3, 0.8, 0.8, 0.8, 1.0, 1.0, 1.2, 0.6, 1.5, 1.5, 0.5, 1.0], dtype=np.float32
)
_POINT_SCATTERERS = np.zeros(19, dtype=np.float32)
_POINT_SCATTERERS[[0, 1]] = (0.04, 0.06)
_HAZE_PROFILE = np.array([1, 0.8, 0.6, 0.4, 0.3, 0.2, 0.15, 0.1, 0.1, 0.1, 0, 0], dtype=np.float32)

CLASS_NAMES: tuple[str, ...] = BEN19_CLASSES


def _description(doc: str) -> str:
    """The card's description: the docstring's "Why" paragraph and the list of the two sensors it ends with."""
    paragraphs = doc.replace("``", "`").split("\n\n")
    why = " ".join(paragraphs[1].removeprefix("Why: ").split())
    return (
        why[0].upper()
        + why[1:]
        + "\n\n"
        + "\n".join("- " + " ".join(item.removeprefix("- ").split()) for item in paragraphs[2].split("\n- "))
    )


_DESCRIPTION = _description(__doc__ or "")
SENSORS: dict[str, int] = {"s1": 2, "s2": 12}


def sensor_specs(image_size: int = DEFAULT_IMAGE_SIZE) -> dict[str, SensorSpec]:
    """Native shapes and dtypes of the synthetic sensors."""
    return {
        "s1": SensorSpec((2, image_size, image_size), "float32"),
        "s2": SensorSpec((12, image_size, image_size), "uint16"),
    }


def features(image_size: int = DEFAULT_IMAGE_SIZE) -> datasets.Features:
    """The shared paired schema for the synthetic set."""
    return paired_features(sensor_specs(image_size), CLASS_NAMES)


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) bilinear interpolation weights (align_corners=False)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2) if n_in > 1 else np.zeros(n_out, int)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1 - frac
    if n_in > 1:
        m[np.arange(n_out), lo + 1] += frac
    return m


def _smooth_noise(rng: np.random.Generator, lead: tuple[int, ...], coarse: int, size: int) -> np.ndarray:
    """Unit-scale smooth random fields: coarse Gaussian noise upsampled bilinearly to (*lead, size, size)."""
    grid = rng.standard_normal((*lead, coarse, coarse), dtype=np.float32)
    m = _interp_matrix(size, coarse)
    return np.einsum("hc,...cd,wd->...hw", m, grid, m, optimize=True)


def _gather_regions(values: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """values (n, P, B) per region, regions (n, H, W) region ids -> (n, B, H, W)."""
    n, p, b = values.shape
    flat = regions + p * np.arange(n)[:, None, None]
    return np.ascontiguousarray(values.reshape(n * p, b)[flat].transpose(0, 3, 1, 2))


def generate_block(
    seed: int, split: str, block: int, image_size: int = DEFAULT_IMAGE_SIZE, min_fraction: float = MIN_FRACTION
) -> dict[str, np.ndarray]:
    """One block of BLOCK pairs, seeded by (seed, split, block); see `generate`."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(block)]))
    n, p, size, c = BLOCK, NUM_REGIONS, int(image_size), len(CLASS_NAMES)

    # Land-cover map: 1-5 classes per scene (Gumbel top-k on the prior), 8 regions of a warped power diagram.
    k = rng.choice(np.arange(1, 6), size=n, p=[0.15, 0.3, 0.3, 0.15, 0.1])
    classes = np.argsort(-(np.log(_PRIOR) + rng.gumbel(size=(n, c))), axis=1)[:, :5]
    pick = rng.integers(0, k[:, None], size=(n, p))
    pick[:, :5] = np.where(np.arange(5) < k[:, None], np.arange(5), pick[:, :5])  # every chosen class appears
    region_class = np.take_along_axis(classes, pick, axis=1)  # (n, P)
    centres = rng.random((n, p, 2), dtype=np.float32)
    weights = rng.random((n, p), dtype=np.float32) * 0.15
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    dist = (axis[None, None, :, None] - centres[..., 0, None, None]) ** 2 + (
        axis[None, None, None, :] - centres[..., 1, None, None]
    ) ** 2
    dist += 0.04 * _smooth_noise(rng, (n, p), 4, size) - weights[..., None, None]
    regions = dist.argmin(axis=1)  # (n, H, W)
    del dist
    land_cover = np.take_along_axis(region_class, regions.reshape(n, -1), axis=1).reshape(n, size, size)
    counts = np.bincount((land_cover + c * np.arange(n)[:, None, None]).ravel(), minlength=n * c).reshape(n, c)
    labels = counts / float(size * size) > min_fraction

    shared = _smooth_noise(rng, (n,), max(2, size // 6), size)  # structure both sensors see (e.g. furrows)

    # S2: per-region brightness and vegetation vigour, class texture, haze, sensor noise.
    spectra = _S2_SPECTRA[region_class] * (1 + 0.12 * rng.standard_normal((n, p, 1), dtype=np.float32))
    spectra[..., 5:10] *= 1 + 0.08 * rng.standard_normal((n, p, 1), dtype=np.float32)
    s2 = _gather_regions(spectra, regions)
    fine = _smooth_noise(rng, (n,), max(2, size // 3), size)
    s2 *= 1 + _S2_TEXTURE[land_cover][:, None] * (0.6 * shared + 0.8 * fine)[:, None]
    s2 += rng.uniform(0, 300, (n, 1, 1, 1)).astype(np.float32) * _HAZE_PROFILE[None, :, None, None]
    s2 += rng.standard_normal(s2.shape, dtype=np.float32) * (0.01 * s2 + 15)
    s2 = np.clip(np.rint(s2), 1, 65535).astype(np.uint16)

    # S1: sigma0 per class + per-region moisture/roughness (invisible to S2), texture, point scatterers,
    # incidence-angle gradient, then Gamma speckle in linear power and back to dB.
    sigma = _S1_SIGMA0[region_class] + 1.5 * rng.standard_normal((n, p, 1), dtype=np.float32)
    sigma[..., 1] += 0.5 * rng.standard_normal((n, p), dtype=np.float32)
    s1 = _gather_regions(sigma, regions)
    own = _smooth_noise(rng, (n,), max(2, size // 4), size)
    s1 += _S1_TEXTURE[land_cover][:, None] * (0.3 * shared + 0.9 * own)[:, None]
    bright = rng.random((n, size, size), dtype=np.float32) < _POINT_SCATTERERS[land_cover]
    s1 += (bright * rng.uniform(6, 15, (n, size, size)).astype(np.float32))[:, None]
    slope = rng.uniform(0.5, 1.5, n).astype(np.float32) * rng.choice([-1, 1], n)
    s1 += slope[:, None, None, None] * (axis - 0.5)[None, None, None, :]
    power = np.exp(s1 * np.float32(np.log(10) / 10))  # 10 ** (dB / 10), much faster than np.power
    power *= rng.standard_gamma(SAR_LOOKS, s1.shape, dtype=np.float32) / SAR_LOOKS
    s1 = np.maximum(10 * np.log10(np.maximum(power, 1e-6)), -50).astype(np.float32)

    return {"s1": s1, "s2": s2, "labels": labels, "land_cover": land_cover.astype(np.uint8)}


def pairing_masks(num_pairs: int, seed: int, split: str, pairing_rate: float = 1.0) -> dict[str, np.ndarray]:
    """{"s1": (N,) bool, "s2": (N,) bool}: which rows keep which sensor. ``round(pairing_rate * N)`` rows keep
    both; of the others, the first half (rounded down) keeps only S1 and the rest only S2, rows drawn at random
    from (seed, split)."""
    if not 0.0 <= float(pairing_rate) <= 1.0:
        raise ValueError(f"pairing_rate must be in [0, 1], got {pairing_rate}")
    has = {"s1": np.ones(num_pairs, bool), "s2": np.ones(num_pairs, bool)}
    paired = int(round(float(pairing_rate) * num_pairs))
    if paired < num_pairs:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], 0x9A1E]))
        unpaired = rng.permutation(num_pairs)[paired:]
        half = len(unpaired) // 2
        has["s2"][unpaired[:half]] = False  # S1-only rows
        has["s1"][unpaired[half:]] = False  # S2-only rows
    return has


def generate(
    num_pairs: int,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    split: str = "train",
    min_fraction: float = MIN_FRACTION,
    pairing_rate: float = 1.0,
) -> dict[str, np.ndarray]:
    """``num_pairs`` synthetic pairs as numpy arrays: ``id`` (N,) str, ``s1`` (N, 2, H, W) float32 dB,
    ``s2`` (N, 12, H, W) uint16, ``labels`` (N, 19) bool multi-hot, ``land_cover`` (N, H, W) uint8 class map,
    ``split`` (N,) str, ``has_s1`` / ``has_s2`` (N,) bool (see `pairing_masks`; `to_columns` turns a missing
    sensor into a null value, the arrays keep every image). Deterministic from (seed, split); a different split
    gives different scenes."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}")
    if num_pairs < 0 or image_size < 4:
        raise ValueError(f"num_pairs must be >= 0 and image_size >= 4, got {num_pairs}, {image_size}")
    blocks = [generate_block(seed, split, b, image_size, min_fraction) for b in range(max(1, -(-num_pairs // BLOCK)))]
    out = {key: np.concatenate([blk[key] for blk in blocks])[:num_pairs] for key in blocks[0]}
    out["id"] = np.array([f"synthetic-{split}-{seed}-{i:06d}" for i in range(num_pairs)])
    out["split"] = np.full(num_pairs, split)
    for sensor, has in pairing_masks(num_pairs, seed, split, pairing_rate).items():
        out[f"has_{sensor}"] = has
    return out


def to_columns(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """`generate` output -> columns of the shared schema (labels as lists of class ids; None where a row lacks a
    sensor)."""

    def column(sensor: str) -> Any:
        has = arrays.get(f"has_{sensor}")
        if has is None or has.all():
            return arrays[sensor]
        return [image if keep else None for image, keep in zip(arrays[sensor], has)]

    return {
        "id": arrays["id"].tolist(),
        "s1": column("s1"),
        "s2": column("s2"),
        "labels": [np.flatnonzero(row).tolist() for row in arrays["labels"]],
        "split": arrays["split"].tolist(),
    }


@dataclass
class SyntheticConfig(datasets.BuilderConfig):
    """Sizes and seed of the synthetic set."""

    num_train: int = DEFAULT_SIZES["train"]
    num_validation: int = DEFAULT_SIZES["validation"]
    num_test: int = DEFAULT_SIZES["test"]
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0
    min_fraction: float = MIN_FRACTION
    pairing_rate: float = 1.0
    """Share of the train rows that keep both sensors (see the module docstring)."""


class SyntheticPairs(datasets.GeneratorBasedBuilder):
    """`datasets` builder for the synthetic S1/S2 pairs (blocks of 256 pairs are the unit of sharding)."""

    BUILDER_CONFIG_CLASS = SyntheticConfig
    BUILDER_CONFIGS = [SyntheticConfig(name="default")]
    CARD: dict[str, Any] = {
        "pretty_name": "CR-JEPA synthetic Sentinel-1 / Sentinel-2 pairs",
        "license": "apache-2.0",
        "description": _DESCRIPTION,
        "source": "Generated by `datasets_scripts/synthetic.py` (deterministic from the seed; no real imagery).",
        "tags": ["synthetic", "sentinel-1", "sentinel-2"],
    }

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.CARD["description"], license="apache-2.0", features=features(self.config.image_size)
        )

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        sizes = {"train": self.config.num_train, "validation": self.config.num_validation, "test": self.config.num_test}
        return [
            datasets.SplitGenerator(
                name=split, gen_kwargs={"split": split, "num_pairs": n, "blocks": list(range(-(-n // BLOCK)))}
            )
            for split, n in sizes.items()
            if n > 0
        ]

    def _generate_examples(self, split: str, num_pairs: int, blocks: list[int]) -> Iterator[tuple[str, dict]]:
        cfg = self.config
        has = pairing_masks(num_pairs, cfg.seed, split, cfg.pairing_rate if split == "train" else 1.0)
        for b in blocks:
            arrays = generate_block(cfg.seed, split, b, cfg.image_size, cfg.min_fraction)
            for i in range(min(BLOCK, num_pairs - b * BLOCK)):
                row = b * BLOCK + i
                pair_id = f"synthetic-{split}-{cfg.seed}-{row:06d}"
                yield (
                    pair_id,
                    {
                        "id": pair_id,
                        "s1": arrays["s1"][i] if has["s1"][row] else None,
                        "s2": arrays["s2"][i] if has["s2"][row] else None,
                        "labels": np.flatnonzero(arrays["labels"][i]).tolist(),
                        "split": split,
                    },
                )


BUILDER_CLASS = SyntheticPairs


def add_cli(subparsers: Any) -> None:
    """Register the ``synthetic`` subcommand."""
    from .common import add_export_arguments

    p = subparsers.add_parser(
        "synthetic",
        help="built-in synthetic S1/S2 pairs (no download)",
        description="Export the built-in synthetic Sentinel-1/Sentinel-2 pairs.",
    )
    from crjepa.data.schema import SYNTHETIC_OPTIONS as LIMITS
    from crjepa.utils.arguments import int_in, number_in

    def bounded(key: str) -> Any:
        kind, low, high = LIMITS[key]
        return int_in(int(low), int(high)) if kind is int else number_in(low, high)

    p.add_argument("--num-train", type=bounded("num_train"), default=DEFAULT_SIZES["train"])
    p.add_argument("--num-validation", type=bounded("num_validation"), default=DEFAULT_SIZES["validation"])
    p.add_argument("--num-test", type=bounded("num_test"), default=DEFAULT_SIZES["test"])
    p.add_argument("--image-size", type=bounded("image_size"), default=DEFAULT_IMAGE_SIZE)
    p.add_argument("--seed", type=bounded("seed"), default=0)
    p.add_argument(
        "--pairing-rate",
        type=bounded("pairing_rate"),
        default=1.0,
        help="share of train rows kept paired; the rest become single-sensor rows, half each sensor",
    )
    add_export_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: Any) -> int:
    """Run the ``synthetic`` subcommand."""
    from .common import run_export

    return run_export(
        SyntheticPairs,
        args,
        num_train=args.num_train,
        num_validation=args.num_validation,
        num_test=args.num_test,
        image_size=args.image_size,
        seed=args.seed,
        pairing_rate=args.pairing_rate,
    )
