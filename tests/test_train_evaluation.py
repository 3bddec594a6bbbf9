"""crjepa/train/evaluation.py: the run's retrieval scores, embedded by the encoder that is saved and served."""

from __future__ import annotations

import torch

from crjepa.data.loading import load_paired_dataset
from crjepa.eval.retrieval import compute_embeddings, select_split
from crjepa.train.config import load_run_config
from crjepa.train.evaluation import evaluate, retrieval_encoder
from modeling_crjepa import CRJepaConfig, CRJepaForPreTraining


def test_the_run_is_scored_through_the_encoder_never_the_pretraining_models_pass_throughs():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    model = CRJepaForPreTraining(CRJepaConfig.from_preset("tiny"))

    def refused(*args, **kwargs):
        raise AssertionError("embedded through a member the pretraining model passes on to its encoder")

    model.get_embeddings = model.embed = refused  # what remains is model.crjepa, the CRJepaModel saved and served
    assert retrieval_encoder(model) is model.crjepa
    dataset = load_paired_dataset("synthetic", num_train=0, num_validation=0, num_test=12, image_size=32, seed=0)
    config = load_run_config(None, [("eval.k", 3), ("eval.batch_size", 8)])
    results, embeddings = evaluate(model, dataset, config, Accelerator(cpu=True))
    assert set(results.metrics["F1@3"]) == {"s1->s1", "s2->s2", "s1->s2", "s2->s1"}
    expected = compute_embeddings(model.crjepa, select_split(dataset, "test"), batch_size=8)
    for column in ("s1_unified", "s2_cross"):
        torch.testing.assert_close(
            torch.as_tensor(embeddings["test"].vectors[column]), torch.as_tensor(expected.vectors[column])
        )
