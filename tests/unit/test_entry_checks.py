"""Each entry point's checks before a host loads anything (entry_checks.py)."""

from __future__ import annotations

from argparse import Namespace

import pytest
import torch

from vsraq_modifier.entry_checks import check_api_inputs, check_cli_inputs
from vsraq_modifier.inputs import InputError


def test_cli_checks_run_only_for_a_vsraq_run(tmp_path) -> None:
    bad = {"model": str(tmp_path / "nowhere"), "seqlen": 1, "nsamples": 4}
    check_cli_inputs(Namespace(loss=None, algorithm=None, **bad))  # plain auto-round
    with pytest.raises(InputError):
        check_cli_inputs(Namespace(loss="vsraq", algorithm=None, **bad))


def test_api_ids_outside_the_vocabulary(tmp_path) -> None:
    from vsraq_modifier.testing import tiny_model

    model = tiny_model("qwen3_moe", num_hidden_layers=1)
    vocab = model.config.vocab_size
    ok = {"dataset": [torch.randint(0, vocab, (1, 8))], "seqlen": 8, "nsamples": 1}
    check_api_inputs(model, None, ok)
    bad = {**ok, "dataset": [torch.full((1, 8), vocab)]}
    with pytest.raises(InputError, match=f"vocabulary of {vocab}"):
        check_api_inputs(model, None, bad)
