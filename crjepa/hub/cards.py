"""The cards of crjepa, defined once: model_cards/*.md rendered with huggingface_hub.

`render_model_card` (a trained model), `render_embeddings_card` (an embeddings archive, crjepa.hub.archive) and
`render_dataset_card` (a data set exported by datasets_scripts); `size_category` is the one Hub size bucket.

The model card's metadata carries the four retrieval results as structured evaluation results (``model-index``, from
`RetrievalResults.model_index`), so the Hub shows them and tools can read them; the body repeats them as the
paper's table, next to the randomly initialised model, with the training data and the full run configuration.

Every string that reaches a code snippet or a command in a card is escaped for that language: Python literals
through Jinja's ``tojson`` in the templates (a JSON string is a Python string literal), shell words through
`shell_word` (``shlex.quote``). Ids, repo names and sensor names come from data and downloaded files.

Not imported by the model files (remote code).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from crjepa.utils.resources import resource_file


def shell_word(value: Any, placeholder: str = "ID") -> str:
    """``value`` as one shell word (``shlex.quote``), for the commands cards show; a value with a line break or
    another control character (which a Markdown code block cannot show as one line) becomes ``placeholder``."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        text = placeholder
    return shlex.quote(text)


def _repo_id(value: str | None, what: str) -> str | None:
    """``value`` when it is a Hub repo id (or None); a ValueError otherwise (cards paste it into code)."""
    from crjepa.hub.access import is_repo_id

    if value is not None and not is_repo_id(value):
        raise ValueError(f"{what} {value!r} is not a Hub repo id ('user-or-org/name': letters, digits, - _ .)")
    return value


def card_template(name: str) -> Path:
    """model_cards/<name>, from the checkout or the installed package (crjepa.utils.resources)."""
    return resource_file("model_cards", name)


MODEL_CARD_TEMPLATE = card_template("model_card.md")
EMBEDDINGS_CARD_TEMPLATE = card_template("embeddings_card.md")
DATASET_CARD_TEMPLATE = card_template("dataset_card.md")
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
"""The Hub's ``size_categories`` buckets (upper bound, name) up to 1B rows."""
TAGS = ["crjepa", "jepa", "remote-sensing", "image-retrieval", "cross-modal-retrieval", "self-supervised"]


def _protocol(results: Any) -> str:
    if results.gallery_split and results.gallery_split != results.query_split:
        return f"queries from the {results.query_split} split, gallery = the {results.gallery_split} split"
    split = f"the {results.query_split} split" if results.query_split else "the whole data set"
    return f"{split} as queries and gallery (each query's own item removed from same-modal rankings)"


def _data_description(
    run_config: dict[str, Any],
    train_pairs: int | None,
    train_rows: dict[str, int] | None = None,
    untrained: Sequence[str] = (),
    epoch_rows: dict[str, int] | None = None,
) -> str:
    data = run_config["data"]
    source = _data_source(data)
    name = data["name"] or source
    lines = [
        f"- data set: **{name}**"
        + (f" ([{data['hub_id']}](https://huggingface.co/datasets/{data['hub_id']}))" if data.get("hub_id") else "")
    ]
    if data.get("path"):
        lines.append(f"- source: the Parquet export `{Path(str(data['path'])).name}` (`python -m datasets_scripts`)")
    else:
        lines.append(f"- source: `{source}`")
    if data.get("options") and not data.get("path"):
        lines.append("- options: " + ", ".join(f"{k}={v}" for k, v in data["options"].items()))
    if train_rows and (len(train_rows) > 1 or untrained):
        counts = ", ".join(f"{n:,} with {k.replace('+', ' + ')}" for k, n in train_rows.items())
        drawn = ""
        if epoch_rows:
            drawn = (
                "; each epoch drew "
                + ", ".join(f"{n:,} with {k.replace('+', ' + ')}" for k, n in epoch_rows.items())
                + " (data.pair_share / data.mix)"
            )
        lines.append(
            f"- training split: `{data['train_split']}`, partially paired: {counts} distinct rows (each loss "
            f"term used the rows that have its sensors{drawn})"
        )
    else:
        lines.append(f"- training split: `{data['train_split']}`" + (f" ({train_pairs} pairs)" if train_pairs else ""))
    if untrained:
        lines.append(
            f"- **cross-modal heads untrained for {', '.join(untrained)}**: no training row had both sensors, "
            "so these directions' scores are those of an untrained cross head; the same-sensor directions "
            "were trained"
        )
    if source == "synthetic" and not data.get("path"):
        lines.append(
            "- the built-in synthetic Sentinel-1/Sentinel-2 pairs of `datasets_scripts.synthetic` "
            "(deterministic from the seed; no real imagery)"
        )
    return "\n".join(lines)


def _data_source(data: dict[str, Any]) -> str:
    """What the run trained on: the export folder's name when ``data.path`` is set (it then wins over
    ``data.source``), else the source."""
    return Path(str(data["path"])).name if data.get("path") else str(data["source"])


def comparison_table(random_init: Any | None, trained: Any) -> str:
    """The headline metric per direction in %, the randomly initialised model next to the trained one."""
    metric = trained.headline_metric
    lines = [f"| direction | {metric} random init | {metric} trained |", "|---|---|---|"]
    for direction in trained.directions:
        before = _percent(random_init.metrics[metric].get(direction)) if random_init is not None else "-"
        lines.append(f"| {direction.upper()} | {before} | {_percent(trained.metrics[metric].get(direction))} |")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    """A score in % with two decimals; "n/a" for a direction that was not scored (no rows with its sensors)."""
    return "n/a" if value is None else f"{value * 100:.2f}"


def _public(value: Any) -> Any:
    """A local path as published: relative paths and Hub ids as they are, absolute or home paths (and any path
    climbing out with ..) reduced to their last component, so the card never names the user's machine."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(("/", "~", "\\")) or (len(value) > 1 and value[1] == ":") or ".." in Path(value).parts:
        return Path(value).name
    return value


PATH_KEYS = (("output_dir",), ("config_file",), ("data", "path"), ("data", "source"))
"""The run-configuration entries that may hold local paths."""


def public_run_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the run configuration fit for publishing (`_public` on every path entry)."""
    import copy

    public = copy.deepcopy(run_config)
    for keys in PATH_KEYS:
        node = public
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and keys[-1] in node:
            node[keys[-1]] = _public(node[keys[-1]])
    for section in ("options", "extra_sources"):
        if isinstance(public.get("data", {}).get(section), dict):
            public["data"][section] = {k: _public(v) for k, v in public["data"][section].items()}
    return public


def _relative(path: str) -> str:
    """A config path relative to the repository when it lies inside it (cards should not leak local paths)."""
    root = MODEL_CARD_TEMPLATE.parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return Path(path).name


def render_model_card(
    model_config: Any,
    run_config: dict[str, Any],
    results: Any,
    random_init: Any = None,
    training_summary: dict[str, Any] | None = None,
    repo_id: str | None = None,
    template_path: str | Path = MODEL_CARD_TEMPLATE,
) -> Any:
    """A huggingface_hub ModelCard for a trained model.

    model_config: the CRJepaConfig; run_config: the training configuration (train_accelerate.py's mapping);
    results / random_init: RetrievalResults of the trained / randomly initialised model; training_summary:
    steps, total_steps, epochs, global_batch, processes, mixed_precision, train_seconds, train_pairs.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if not Path(template_path).is_file():
        raise FileNotFoundError(f"Model card template not found at {template_path}")
    config_file = _relative(run_config.get("config_file", "configs/cpu_default.yaml"))
    run_config = public_run_config(run_config)  # the card is published: no local paths
    summary = dict(training_summary or {})
    hub = run_config.get("hub", {})
    repo_id = _repo_id(repo_id or hub.get("hub_model_id"), "The model's repo id") or "<user>/<model>"
    data = run_config["data"]
    dataset_name = data.get("name") or _data_source(data)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", dataset_name).strip("-")
    model_name = repo_id.split("/")[-1] if "/" in repo_id and not repo_id.startswith("<") else f"crjepa-{slug}"
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-feature-extraction",
        inference=False,  # served by the checkpoint's own pipeline (trust_remote_code), never by a hosted widget
        license="apache-2.0",
        tags=TAGS + [s for s in model_config.sensor_names],
        datasets=[data["hub_id"]] if data.get("hub_id") else None,
        eval_results=results.model_index(dataset_type=data.get("hub_id")),  # else an id from the data set's name
    )
    comparison = comparison_table(random_init, results) if random_init is not None else None
    training = run_config["training"]
    from crjepa.eval.directions import directions_of

    sensors = list(model_config.sensor_names)
    sensor_a, sensor_b = sensors[0], sensors[1 % len(sensors)]
    directions = directions_of(sensors)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        sensor_a=sensor_a,
        sensor_b=sensor_b,
        sensors=sensors,
        same_modal_directions=[d for d in directions if d.split("->")[0] == d.split("->")[1]],
        cross_modal_directions=[d for d in directions if d.split("->")[0] != d.split("->")[1]] or ["none"],
        band_names=dict(model_config.band_names),
        image_size=model_config.image_size,
        retrieval_dim=model_config.retrieval_dim,
        num_parameters=summary.get("num_parameters", "n/a"),
        dataset_name=dataset_name,
        protocol=_protocol(results),
        num_queries=results.num_queries,
        num_gallery=results.num_gallery,
        counts=results.counts(),
        results_table=results.to_markdown(),
        comparison_table=comparison,
        notes="; ".join(results.notes),
        data_description=_data_description(
            run_config,
            summary.get("train_pairs"),
            summary.get("train_rows"),
            summary.get("untrained_directions") or (),
            summary.get("epoch_rows"),
        ),
        config_file=config_file,
        config_file_shell=shell_word(config_file, "CONFIG.yaml"),
        routes=list(model_config.routes),
        lambda_cross=model_config.lambda_cross,
        lambda_uni=model_config.lambda_uni,
        lambda_sigreg=model_config.lambda_sigreg,
        mask_ratio=model_config.mask_ratio,
        temperature=model_config.temperature,
        weight_decay=training["weight_decay"],
        max_grad_norm=training["max_grad_norm"],
        lr_start=training["lr_start"],
        lr=training["lr"],
        lr_end=training["lr_end"],
        warmup_epochs=training["warmup_epochs"],
        steps=summary.get("steps", "n/a"),
        total_steps=summary.get("total_steps", "n/a"),
        epochs=summary.get("epochs", training["epochs"]),
        global_batch=summary.get("global_batch", "n/a"),
        processes=summary.get("processes", "n/a"),
        mixed_precision=summary.get("mixed_precision", "n/a"),
        train_seconds=summary.get("train_seconds", "n/a"),
        run_config_yaml=yaml.safe_dump({**run_config, "config_file": config_file}, sort_keys=False).rstrip(),
        synthetic=_data_source(data) == "synthetic",
    )


def size_category(rows: int) -> str:
    """The Hub's size bucket of a data set with ``rows`` rows (e.g. 1500 -> "1K<n<10K")."""
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "1B<n<10B")


def render_embeddings_card(
    info: Mapping[str, Any], example_id: str, template_path: str | Path = EMBEDDINGS_CARD_TEMPLATE
) -> Any:
    """The card of an embeddings archive (a huggingface_hub DatasetCard) from model_cards/embeddings_card.md;
    ``info`` is the archive's embeddings_info.json."""
    from huggingface_hub import DatasetCard, DatasetCardData

    if not Path(template_path).is_file():
        raise FileNotFoundError(f"Embeddings card template not found at {template_path}")
    rows = info["num_rows"]
    source = dict(info.get("source") or {})
    split = str(source.get("split") or "train")  # crjepa.hub.archive.provenance.archive_split: the shards' names
    card_data = DatasetCardData(
        pretty_name=f"CR-JEPA embeddings ({' / '.join(info['sensors'])})",
        license=info.get("license") or "other",
        tags=["crjepa", "embeddings", "remote-sensing", "faiss", "cross-modal-retrieval"],
        task_categories=["image-feature-extraction"],
        size_categories=[size_category(rows)],
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*.parquet"}]}],
    )
    sensors = info["sensors"]
    example_direction = f"{sensors[0]}->{sensors[-1]}"
    repo_id = _repo_id(info.get("repo_id"), "The archive's repo id") or "<user>/<embeddings-repo>"
    _repo_id(info.get("model_repo_id"), "The model's repo id")
    return DatasetCard.from_template(
        card_data,
        template_path=str(template_path),
        pretty_name=card_data.pretty_name,
        num_rows=rows,
        sensors=sensors,
        model_repo_id=info.get("model_repo_id"),
        model_fingerprint=info.get("model_fingerprint"),
        source=source_prose(source),
        split=split,
        license=info.get("license"),
        dimension=info["dimension"],
        class_names=info["class_names"],
        metadata_columns=info["metadata_columns"],
        vector_columns=info["vector_columns"],
        index_files=info["indices"],
        index_calibration=info.get("index_calibration") or {},
        repo_id=repo_id,
        repo_id_shell=shell_word(repo_id),
        example_id=example_id,
        example_id_shell=shell_word(example_id, "ARCHIVE_ID"),
        example_direction=example_direction,
        example_direction_shell=shell_word(example_direction),
    )


def source_prose(source: Mapping[str, Any]) -> str:
    """The data an archive was computed from, in words: which split of which data set (a Hub id linked), with the
    options of the built-in synthetic set."""
    dataset = str(source.get("dataset") or "")
    if not dataset:
        return "not recorded"
    split = source.get("split")
    options = {k: v for k, v in source.items() if k not in ("dataset", "split")}
    if dataset == "synthetic":
        name = "the built-in synthetic Sentinel-1 / Sentinel-2 pairs of crjepa (no real imagery)"
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", dataset):
        name = f"the Hub data set [{dataset}](https://huggingface.co/datasets/{dataset})"
    else:
        name = f"the data set `{dataset}` (a `python -m datasets_scripts` export)"
    which = f"the `{split}` split of {name}" if split else f"every row of {name} (all splits)"
    return which + (f", with {', '.join(f'{k}={v}' for k, v in options.items())}" if options else "")


def render_dataset_card(
    info: Any,
    splits: Mapping[str, int] | None = None,
    card: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
) -> str:
    """The README.md of a data set exported by datasets_scripts (``info``: the builder's datasets.DatasetInfo after
    preparation): YAML (configs with data_files per split, datasets' own dataset_info with its split sizes, license,
    task_categories, tags) so `load_dataset(repo)` works with no code and no warning, plus the template's prose.
    ``splits`` ({split: rows}) stands in for ``info.splits`` when the info has none."""
    import copy

    import datasets
    from huggingface_hub import DatasetCard, DatasetCardData

    from crjepa.data.schema import sensor_columns

    card = dict(card or {})
    _repo_id(repo_id, "The data set's repo id")
    info = copy.deepcopy(info)
    if not info.splits and splits:
        info.splits = datasets.SplitDict()
        for name, rows in splits.items():
            info.splits.add(datasets.SplitInfo(name=name, num_examples=int(rows)))
    splits = {name: split.num_examples for name, split in (info.splits or {}).items()}
    features = info.features
    sensors = sensor_columns(features)
    class_names = features["labels"].feature.names
    data = DatasetCardData(
        pretty_name=card.get("pretty_name", repo_id or "paired remote-sensing images"),
        license=card.get("license") or "other",
        task_categories=["image-feature-extraction"],
        tags=["remote-sensing", "cross-modal-retrieval", "crjepa", "earth-observation", *card.get("tags", [])],
        size_categories=[size_category(sum(splits.values()))],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits],
            }
        ],
    )
    datasets.info.DatasetInfosDict({"default": info}).to_dataset_card_data(data)  # datasets' own split metadata
    sensor_lines = "\n".join(
        f"| `{s}` | {features[s].shape[0]} | {features[s].shape[1]}x{features[s].shape[2]} | {features[s].dtype} |"
        for s in sensors
    )
    return str(
        DatasetCard.from_template(
            data,
            template_path=str(DATASET_CARD_TEMPLATE),
            pretty_name=data.pretty_name,
            repo_id=repo_id or "<user>/<repo>",
            description=card.get("description") or info.description or "",
            source=card.get("source", ""),
            citation=card.get("citation") or info.citation or "",
            sensor_table=sensor_lines,
            sensor_names=sensors,
            class_names=list(class_names),
            first_split=next(iter(splits), "train"),
            split_table="\n".join(f"| {s} | {n:,} |" for s, n in splits.items()),
            metadata_columns={
                k: _column_type(v) for k, v in features.items() if k not in {"id", "labels", "split", *sensors}
            },
        )
    )


def _column_type(feature: Any) -> str:
    """A metadata column's type as the card states it: "string", "float64", "list of string", ..."""
    if hasattr(feature, "feature"):  # a List / Sequence
        return f"list of {_column_type(feature.feature)}"
    return str(getattr(feature, "dtype", None) or type(feature).__name__)


__all__ = [
    "DATASET_CARD_TEMPLATE",
    "EMBEDDINGS_CARD_TEMPLATE",
    "MODEL_CARD_TEMPLATE",
    "SIZE_CATEGORIES",
    "card_template",
    "comparison_table",
    "public_run_config",
    "render_dataset_card",
    "render_embeddings_card",
    "render_model_card",
    "shell_word",
    "size_category",
    "source_prose",
]
