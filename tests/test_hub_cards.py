"""crjepa.hub.cards: every card of the project (model, embeddings archive, exported data set) in one module,
with one size bucket the Hub accepts."""

from __future__ import annotations

import datasets
import pytest
from huggingface_hub import DatasetCard

from crjepa.hub.cards import SIZE_CATEGORIES, render_dataset_card, render_embeddings_card, size_category

HUB_BUCKETS = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B"}


@pytest.mark.parametrize(
    "rows, bucket",
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1_000, "1K<n<10K"),
        (99_999, "10K<n<100K"),
        (590_326, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (2_500_000_000, "1B<n<10B"),
    ],
)
def test_size_category_uses_the_hub_buckets(rows, bucket):
    assert size_category(rows) == bucket
    assert {name for _, name in SIZE_CATEGORIES} <= HUB_BUCKETS


@pytest.mark.parametrize("rows", [500, 1_200_000])
def test_embeddings_and_dataset_cards_agree_on_the_size(rows):
    info = {
        "num_rows": rows,
        "sensors": ["s1", "s2"],
        "dimension": 8,
        "class_names": ["a", "b"],
        "metadata_columns": [],
        "vector_columns": ["s1_cross", "s2_cross"],
        "indices": {},
    }
    embeddings = DatasetCard(str(render_embeddings_card(info, "id-0")))
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "s1": datasets.Array3D((2, 4, 4), "float32"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=["a", "b"])),
            "split": datasets.Value("string"),
        }
    )
    exported = DatasetCard(render_dataset_card(datasets.DatasetInfo(features=features), {"train": rows}))
    assert embeddings.data.size_categories == exported.data.size_categories == [size_category(rows)]


def test_model_card_promises_the_call_that_works_and_structured_results_the_hub_reads():
    """The rendered card: pipeline_tag image-feature-extraction (the checkpoint's own pipeline serves it), no hosted
    widget, the pipeline call in the usage, Pillow named; model-index with a Hub task, evaluate module ids."""
    import copy

    from huggingface_hub import ModelCard
    from transformers.pipelines import PIPELINE_REGISTRY

    from crjepa.eval.retrieval import RetrievalResults
    from crjepa.hub.cards import render_model_card
    from crjepa.train.config import DEFAULTS
    from modeling_crjepa import CRJepaConfig

    run_config = copy.deepcopy(DEFAULTS)
    run_config["data"].update(name="BEN-14K (reBEN)", hub_id=None)
    results = RetrievalResults(
        dataset_name="BEN-14K (reBEN)",
        sensors=["s1", "s2"],
        k=5,
        multi_label=True,
        metrics={"F1@5": {"s1->s1": 0.7, "s2->s2": 0.8, "s1->s2": 0.75, "s2->s1": 0.74}},
        query_split="test",
        num_queries=10,
        num_gallery=10,
    )
    card = ModelCard(str(render_model_card(CRJepaConfig.from_preset("tiny"), run_config, results)))
    assert card.data.pipeline_tag in PIPELINE_REGISTRY.get_supported_tasks() and card.data.inference is False
    assert 'pipeline("image-feature-extraction", model=' in card.text and "Pillow" in card.text
    entries = card.data.eval_results
    assert {r.task_type for r in entries} == {"image-feature-extraction"}
    assert {r.dataset_type for r in entries} == {"ben-14k-reben"} and {r.metric_type for r in entries} == {
        "crjepa_f1_at_k"
    }
    assert entries[0].metric_args == {"k": 5, "variant": "paper"} and entries[0].metric_value == 70.0


# ---------------------------------------------------------------------------------------------- escaping
HOSTILE = [
    "x\" if __import__('os').system('touch PWN') else \"x",  # closes a "..." literal in the old cards
    "a'b; touch PWN #\n```\nimport os; os.system('touch PWN')",  # a new line, a fence, a shell command
    "$(touch PWN) `touch PWN` s1->s2 <in >out",
]


def _blocks(card: str, language: str) -> list[str]:
    """The fenced code blocks of a Markdown text in ``language`` (a fence opens and closes at a line start)."""
    blocks, current, lang = [], None, None
    for line in card.splitlines():
        if line.startswith("```"):
            if current is None:
                current, lang = [], line[3:].strip()
            else:
                if lang == language:
                    blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _calls(code: str) -> list:
    import ast

    tree = ast.parse(code)  # it is still Python: nothing broke out of a literal or a comment
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & {"os", "__import__", "system", "exec", "eval"}, names
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _literal(node):
    import ast

    return ast.literal_eval(node)


@pytest.mark.parametrize("value", HOSTILE)
def test_cards_escape_ids_repo_ids_and_sensor_names_in_code_and_commands(value, tmp_path, monkeypatch):
    """The embeddings card pasted an archive id (from the data) into a Python string literal and a shell command
    unescaped: running its snippet ran the id's code, and its `--direction s1->s2` wrote a file `s2`. Every card's
    snippets now take such values as literals (Python: JSON strings, shell: shlex.quote)."""
    import shlex

    from huggingface_hub import ModelCard, ModelCardData

    from crjepa.hub.cards import MODEL_CARD_TEMPLATE, shell_word

    info = {
        "num_rows": 5,
        "sensors": ["s1", "s2"],
        "dimension": 8,
        "class_names": ["a"],
        "metadata_columns": [],
        "vector_columns": ["s1_cross", "s2_cross"],
        "indices": {},
        "repo_id": None,
    }
    card = str(render_embeddings_card(info, value))
    (python,) = _blocks(card, "python")
    search = next(c for c in _calls(python) if getattr(c.func, "attr", "") == "search_by_id")
    assert _literal(search.args[0]) == value and _literal(search.keywords[0].value) == "s1->s2"
    (shell,) = _blocks(card, "bash")
    words = shlex.split(shell)
    assert words[:3] == ["crjepa", "search", "<user>/<embeddings-repo>"] and words[5:7] == ["--direction", "s1->s2"]
    assert words[4] == (value if "\n" not in value else "ARCHIVE_ID")

    model = str(
        ModelCard.from_template(
            ModelCardData(),
            template_path=str(MODEL_CARD_TEMPLATE),
            repo_id="me/model",
            sensor_a=value,
            sensor_b="s2",
            config_file_shell=shell_word(value, "C.yaml"),
            sensors=[value, "s2"],
            band_names={value: ["b"]},
            routes=[],
            same_modal_directions=[],
            cross_modal_directions=[],
        )
    )
    calls = [c for block in _blocks(model, "python") for c in _calls(block)]  # the pipeline, then the model's API
    assert [_literal(c.args[0]) for c in calls if getattr(c.func, "attr", "") == "from_pretrained"] == ["me/model"] * 2
    assert [_literal(k.value) for c in calls for k in c.keywords if k.arg == "model"] == ["me/model"]
    assert [_literal(k.value) for c in calls for k in c.keywords if k.arg == "sensor"] == [value] * 4
    command = next(line for line in model.splitlines() if "accelerate launch train_accelerate.py --config" in line)
    assert shlex.split(command.split("--config ", 1)[1].rsplit("`", 1)[0])[-1] == (
        value if "\n" not in value else "C.yaml"
    )

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            value: datasets.Array3D((2, 4, 4), "float32"),
            "labels": datasets.Sequence(datasets.ClassLabel(names=["a"])),
            "split": datasets.Value("string"),
        }
    )
    exported = render_dataset_card(datasets.DatasetInfo(features=features), {"train": 3}, repo_id="me/data")
    calls = [c for block in _blocks(exported, "python") for c in _calls(block)]
    assert [_literal(c.args[0]) for c in calls if getattr(c.func, "id", "") == "load_dataset"] == ["me/data"]
    assert [_literal(k.value) for c in calls for k in c.keywords if k.arg == "sensors"] == [[value]]
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / "PWN").exists()


def test_a_repo_id_that_is_not_one_never_reaches_a_card():
    """Repo ids are pasted into code and links: anything but user/name (letters, digits, - _ .) is refused."""
    from crjepa.hub.access import is_repo_id

    assert is_repo_id("user/crjepa-ben14k_v1.2") and not any(is_repo_id(v) for v in HOSTILE + ["a/b/c", "ab", None])
    info = {
        "num_rows": 5,
        "sensors": ["s1"],
        "dimension": 8,
        "class_names": ["a"],
        "metadata_columns": [],
        "vector_columns": ["s1_cross"],
        "indices": {},
    }
    for value in HOSTILE:
        with pytest.raises(ValueError, match="is not a Hub repo id"):
            render_embeddings_card({**info, "repo_id": value}, "id-0")
        with pytest.raises(ValueError, match="is not a Hub repo id"):
            render_embeddings_card({**info, "model_repo_id": value}, "id-0")
