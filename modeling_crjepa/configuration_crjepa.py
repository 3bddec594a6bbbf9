"""CRJepaConfig: every knob of CR-JEPA (arXiv 2606.00706) in one place.

The config is the single source of truth: the model, the losses, the image processor, the training script
and the presets all read their settings from here. Choices the paper leaves open are fields too, with the
defaults documented in docs/PAPER.md. This file travels with `save_pretrained` (remote code): it imports only
the standard library and transformers.
"""

from __future__ import annotations

import copy
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

PAPER_ROUTES = ("aa", "bb", "ab", "ba")
"""The paper's route codes over the first two sensors a and b: a->a, b->b (same-modal), a->b, b->a (cross-modal).
Configs (YAML, config.json, keyword arguments) may name routes by them; they are read as the "source->target"
routes they name (`normalize_route`), which is what a config holds and saves."""
ROUTE_ARROW = "->"


def all_routes(sensors) -> list[str]:
    """Every (source, target) route among `sensors` as "source->target": the same-sensor routes in sensor order,
    then the cross-sensor ones pair by pair (a->b, b->a, a->c, c->a, ...). Two sensors: a->a, b->b, a->b, b->a
    (the paper's order aa, bb, ab, ba)."""
    names = list(sensors)
    routes = [f"{s}{ROUTE_ARROW}{s}" for s in names]
    for i, source in enumerate(names):
        for target in names[i + 1 :]:
            routes += [f"{source}{ROUTE_ARROW}{target}", f"{target}{ROUTE_ARROW}{source}"]
    return routes


def normalize_route(route: str, sensors) -> str:
    """A route as "source->target": the paper's codes (`PAPER_ROUTES`: aa, bb, ab, ba) map to the first two sensors;
    other text is returned stripped of spaces (checked by CRJepaConfig.check)."""
    names = list(sensors)
    route = str(route).replace(" ", "")
    if route in PAPER_ROUTES and len(names) >= 2:
        letter = dict(zip("ab", names[:2]))
        return f"{letter[route[0]]}{ROUTE_ARROW}{letter[route[1]]}"
    return route


def split_route(route: str) -> tuple[str, str]:
    """ "s1->s2" -> ("s1", "s2")."""
    source, _, target = route.partition(ROUTE_ARROW)
    return source, target


PREDICTOR_SHARING = ("paper", "independent", "shared")
"""Which predictor serves each route (modeling_crjepa.predictor_for_route): paper: one same-sensor predictor per
sensor (P_aa, P_bb, ...) and one P_cross for every cross-sensor route; independent: one predictor per route;
shared: one predictor for all routes."""

HEAD_INITS = ("unit", "small")
"""unit: LayerNorm on the pooled features and head linears drawn with std 1/sqrt(fan_in), so the raw
projections r start near unit scale, where SIGReg's target N(0, I) is and its gradient is alive; small: no
LayerNorm, std = initializer_range (r starts ~0.03: r = 0 is a stationary point of SIGReg's statistic and the
regulariser stays inactive; kept to reproduce that measurement)."""
HEAD_MODES = ("decoupled", "single")
"""decoupled: phi_uni for same-modal and phi_cross for cross-modal search (the paper); single: one head
serves both spaces (ablation)."""

TRUNK_MODES = ("shared", "separate")
"""shared: one trunk g for both sensors (the paper); separate: one trunk per sensor (dual-encoder ablation)."""

# BigEarthNet v1 per-band statistics (the BigEarthNet reference models' values; S2 in uint16 reflectance
# units, S1 in dB).
_S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
_S2_MEAN = [
    340.76769064,
    429.9430203,
    614.21682446,
    590.23569706,
    950.68368468,
    1792.46290469,
    2075.46795189,
    2218.94553375,
    2266.46036911,
    2246.0605464,
    1594.42694882,
    1009.32729131,
]
_S2_STD = [
    554.81258967,
    572.41639287,
    582.87945694,
    675.88746967,
    729.89827633,
    1096.01480586,
    1273.45393088,
    1365.45589904,
    1356.13789355,
    1302.3292881,
    1079.19066363,
    818.86747235,
]
_S1_MEAN = [-12.619993741972035, -19.29044597721542]
_S1_STD = [5.115911777546365, 5.464428464912864]

_PAPER_SIZES: dict[str, Any] = {
    "image_size": 224,
    "patch_size": 16,
    "hidden_size": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "predictor_depth": 6,
    "predictor_hidden_size": 512,
    "predictor_num_heads": 8,
    "retrieval_dim": 256,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's BEN-14K model: S1 (VV, VH in dB) and S2 (12 L2A bands), 117.93M parameters.
    "ben14k": {
        **_PAPER_SIZES,
        "sensors": {"s1": 2, "s2": 12},
        "band_names": {"s1": ["VV", "VH"], "s2": list(_S2_BANDS)},
        "band_mean": {"s1": list(_S1_MEAN), "s2": list(_S2_MEAN)},
        "band_std": {"s1": list(_S1_STD), "s2": list(_S2_STD)},
        "sar_sensors": ["s1"],
    },
    # GaoFen-1 panchromatic (1 band) and multispectral (4 bands), 8-bit PNG.
    "dsrsid": {
        **_PAPER_SIZES,
        "sensors": {"pan": 1, "ms": 4},
        "band_names": {"pan": ["PAN"], "ms": ["B1", "B2", "B3", "B4"]},
        "band_mean": {"pan": [127.5], "ms": [127.5] * 4},
        "band_std": {"pan": [64.0], "ms": [64.0] * 4},
        "sar_sensors": [],
    },
    # CBRSIR_VS: RGB optical (3 bands, 8-bit) and Sentinel-1 SAR intensity (1 band, 8-bit).
    "cbrsir_vs": {
        **_PAPER_SIZES,
        "sensors": {"rgb": 3, "sar": 1},
        "band_names": {"rgb": ["R", "G", "B"], "sar": ["SAR"]},
        "band_mean": {"rgb": [127.5] * 3, "sar": [127.5]},
        "band_std": {"rgb": [64.0] * 3, "sar": [64.0]},
        "sar_sensors": [],
    },
    # A CPU-sized S1/S2 model for the built-in synthetic data, tests and the quick start.
    "tiny": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "predictor_depth": 1,
        "predictor_hidden_size": 64,
        "predictor_num_heads": 4,
        "retrieval_dim": 32,
        "head_hidden_size": 64,
        "sigreg_num_directions": 256,
        "sensors": {"s1": 2, "s2": 12},
        "band_names": {"s1": ["VV", "VH"], "s2": list(_S2_BANDS)},
        "band_mean": {"s1": list(_S1_MEAN), "s2": list(_S2_MEAN)},
        "band_std": {"s1": list(_S1_STD), "s2": list(_S2_STD)},
        "sar_sensors": ["s1"],
    },
}


@strict(accept_kwargs=True)
class CRJepaConfig(PreTrainedConfig):
    r"""Configuration of a CR-JEPA model.

    Sensors
        sensors: ordered mapping sensor name -> channel count, one or more (pretraining needs two or more;
            CRJepaForPreTraining checks). In the paper's notation the first is sensor ``a``, the second ``b``.
        default_sensor: the sensor `CRJepaModel.forward` and the image processor assume when none is named and
            the channel count does not tell (None: the first sensor).
        band_names, band_mean, band_std: per sensor, one entry per channel (normalisation statistics used
            by the image processor and the on-device preprocessing). Missing stats mean 0 / 1.
        sar_sensors: sensors whose values are SAR backscatter in dB (non-finite values are filled with the
            band mean, i.e. 0 after normalisation; see ``nan_policy``).
        nan_policy: "fill" (replace NaN/inf by the band mean) or "raise".
    Architecture (paper defaults)
        image_size 224, patch_size 16, hidden_size 512, num_hidden_layers 12, num_attention_heads 8,
        mlp_ratio 4, predictor_depth 6, predictor_hidden_size 512, retrieval_dim 256.
        head_hidden_size: width of the hidden layer of each retrieval head MLP (0: a single linear layer).
        head_init: one of HEAD_INITS (how the retrieval heads start; "unit" keeps SIGReg active).
        predictor_sharing: one of PREDICTOR_SHARING. head_mode: one of HEAD_MODES. trunk_mode: TRUNK_MODES.
    Objective
        mask_ratio: fraction of tokens that are masked (targets) per sample and sensor.
        routes: the active prediction routes, "source->target" sensor pairs (default: every pair,
            `all_routes`); the paper's codes aa / bb / ab / ba name routes among the first two sensors.
        route_weights: lambda per route (default 1; keys as routes).
        lambda_cross, lambda_uni, lambda_sigreg: loss weights; temperature: InfoNCE temperature.
        sigreg_num_directions (J), sigreg_num_knots, sigreg_t_max: SIGReg's slicing and quadrature.
        stop_gradient_targets: detach z_M before the prediction loss.
    Implementation (no effect on what is computed)
        pack_sensors: run the trunk once on the visible tokens of both sensors (and once on both targets) as
            one batch, each predictor once on all the routes it serves, and each head once on both sensors;
            same math in fewer, larger kernels. False: one call per sensor and route (the reference path that
            tests compare against). Packing needs a shared trunk; separate trunks run per sensor either way.
    """

    model_type = "crjepa"

    # sensors and preprocessing. A None default means "derive it" (__post_init__ fills it in), so once built these
    # fields are never None; dataclass typing cannot give the keyword argument a wider type than the attribute,
    # hence the ignores on the None defaults.
    sensors: dict[str, int] = None  # type: ignore[assignment]
    band_names: dict[str, list[str]] = None  # type: ignore[assignment]
    band_mean: dict[str, list[float]] = None  # type: ignore[assignment]
    band_std: dict[str, list[float]] = None  # type: ignore[assignment]
    sar_sensors: list[str] = None  # type: ignore[assignment]
    nan_policy: str = "fill"
    default_sensor: str | None = None
    # stems and trunk
    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    initializer_range: float = 0.02
    trunk_mode: str = "shared"
    # predictors
    predictor_depth: int = 6
    predictor_hidden_size: int = 512
    predictor_num_heads: int = 8
    predictor_sharing: str = "paper"
    # retrieval heads
    retrieval_dim: int = 256
    head_hidden_size: int = 512
    head_mode: str = "decoupled"
    head_init: str = "unit"
    # objective
    mask_ratio: float = 0.5
    routes: list[str] = None  # type: ignore[assignment]  # None: every route (`all_routes`)
    route_weights: dict[str, float] = None  # type: ignore[assignment]  # None: 1 per route
    lambda_cross: float = 1.0
    lambda_uni: float = 1.0
    lambda_sigreg: float = 0.05
    temperature: float = 0.1
    sigreg_num_directions: int = 1024
    sigreg_num_knots: int = 17
    sigreg_t_max: float = 3.0
    stop_gradient_targets: bool = True
    # implementation
    pack_sensors: bool = True

    def __post_init__(self, **kwargs):
        if self.sensors is None:
            self.sensors = dict(PRESETS["ben14k"]["sensors"])
        self.sensors = {str(k): int(v) for k, v in dict(self.sensors).items()}
        if self.band_names is None:
            self.band_names = {s: [f"{s}_{i}" for i in range(c)] for s, c in self.sensors.items()}
        if self.band_mean is None:
            self.band_mean = {s: [0.0] * c for s, c in self.sensors.items()}
        if self.band_std is None:
            self.band_std = {s: [1.0] * c for s, c in self.sensors.items()}
        if self.sar_sensors is None:
            self.sar_sensors = []
        if self.routes is None:
            self.routes = all_routes(self.sensors)
        self.routes = [normalize_route(r, self.sensors) for r in self.routes]
        weights = {r: 1.0 for r in all_routes(self.sensors)}
        weights.update({normalize_route(r, self.sensors): w for r, w in (self.route_weights or {}).items()})
        self.route_weights = {r: float(w) for r, w in weights.items()}
        super().__post_init__(**kwargs)
        self.check()

    # ------------------------------------------------------------------ validation
    def check(self) -> None:
        """Check the knobs against each other; raises ValueError with a message a user can act on.

        Runs at construction (end of __post_init__), so a bad config never reaches a model.
        """
        errors = []
        if len(self.sensors) < 1:
            errors.append("sensors must name at least one sensor (name -> channel count), found none")
        if any(ROUTE_ARROW in s or "." in s or "/" in s or not s for s in self.sensors):
            errors.append(f"sensor names must be non-empty and contain no '->', '.' or '/', found {list(self.sensors)}")
        if self.default_sensor is not None and self.default_sensor not in self.sensors:
            errors.append(f"default_sensor {self.default_sensor!r} must be one of sensors {list(self.sensors)}")
        for name, channels in self.sensors.items():
            if channels < 1:
                errors.append(f"sensor {name!r} needs at least one channel, found {channels}")
            for field in ("band_names", "band_mean", "band_std"):
                values = getattr(self, field).get(name)
                if values is None or len(values) != channels:
                    found = None if values is None else len(values)
                    errors.append(f"{field}[{name!r}] must have {channels} entries (one per channel), found {found}")
            if any(float(s) <= 0 for s in self.band_std.get(name, [])):
                errors.append(f"band_std[{name!r}] must be positive, found {self.band_std[name]}")
        for field in ("band_names", "band_mean", "band_std"):
            extra = set(getattr(self, field)) - set(self.sensors)
            if extra:
                errors.append(f"{field} names unknown sensors {sorted(extra)}; sensors are {list(self.sensors)}")
        if set(self.sar_sensors) - set(self.sensors):
            errors.append(f"sar_sensors {self.sar_sensors} must be among sensors {list(self.sensors)}")
        if self.image_size % self.patch_size:
            errors.append(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            errors.append(
                f"hidden_size {self.hidden_size} must be divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.predictor_hidden_size % self.predictor_num_heads:
            errors.append(
                f"predictor_hidden_size {self.predictor_hidden_size} must be divisible by predictor_num_heads "
                f"{self.predictor_num_heads}"
            )
        if not 0.0 < self.mask_ratio < 1.0:
            errors.append(f"mask_ratio must be in (0, 1), found {self.mask_ratio}")
        known = all_routes(self.sensors)
        bad_routes = [r for r in self.routes if r not in known]
        if bad_routes:
            errors.append(
                f"routes {bad_routes} unknown; routes are 'source->target' among sensors {list(self.sensors)} "
                f"(or the codes aa, bb, ab, ba for the first two), e.g. {known[:4]}"
            )
        if len(set(self.routes)) != len(self.routes):
            errors.append(f"routes {self.routes} name a route twice")
        if set(self.route_weights) - set(known):
            errors.append(f"route_weights keys must be routes among {known}, found {sorted(self.route_weights)}")
        for field, choices in (
            ("predictor_sharing", PREDICTOR_SHARING),
            ("head_mode", HEAD_MODES),
            ("head_init", HEAD_INITS),
            ("trunk_mode", TRUNK_MODES),
            ("nan_policy", ("fill", "raise")),
        ):
            if getattr(self, field) not in choices:
                errors.append(f"{field} must be one of {list(choices)}, found {getattr(self, field)!r}")
        if self.temperature <= 0:
            errors.append(f"temperature must be positive, found {self.temperature}")
        if self.sigreg_num_knots < 2 or self.sigreg_num_directions < 1 or self.sigreg_t_max <= 0:
            errors.append("SIGReg needs sigreg_num_knots >= 2, sigreg_num_directions >= 1 and sigreg_t_max > 0")
        if errors:
            raise ValueError("Invalid CRJepaConfig:\n  - " + "\n  - ".join(errors))

    # ------------------------------------------------------------------ conveniences
    @property
    def sensor_names(self) -> list[str]:
        """The sensor names in order (a, b, ...)."""
        return list(self.sensors)

    @property
    def route_pairs(self) -> list[tuple[str, str]]:
        """The active routes as (source, target) sensor pairs, in config order."""
        return [split_route(r) for r in self.routes]

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_preset(cls, name: str, **overrides) -> CRJepaConfig:
        """A config from a named preset (``ben14k``, ``dsrsid``, ``cbrsir_vs``, ``tiny``) plus overrides."""
        if name not in PRESETS:
            raise ValueError(f"Unknown CR-JEPA preset {name!r}; available: {sorted(PRESETS)}")
        values = copy.deepcopy(PRESETS[name])
        values.update(overrides)
        return cls(**values)


__all__ = [
    "CRJepaConfig",
    "PRESETS",
    "PAPER_ROUTES",
    "PREDICTOR_SHARING",
    "HEAD_MODES",
    "TRUNK_MODES",
    "all_routes",
    "normalize_route",
    "split_route",
]
