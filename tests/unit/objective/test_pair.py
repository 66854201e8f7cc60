"""RouterPair preparation: shapes checked, padding dropped, an all-padding pair
gives nothing to align, non-finite logits name the tensor."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.objective.pair import NonFiniteRoutingError, RouterPair, prepare
from vsraq_modifier.routing import RouterSpec


def _spec() -> RouterSpec:
    return RouterSpec(num_experts=6, top_k=2)


def test_prepare_keeps_valid_tokens_and_refuses_bad_pairs() -> None:
    z, ref = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[0, :3] = True
    prep = prepare(RouterPair(z, ref, _spec(), mask=mask))
    assert prep is not None and prep.num_tokens == 3
    assert prepare(RouterPair(z, ref, _spec(), mask=torch.zeros_like(mask))) is None
    with pytest.raises(ValueError, match="same shape"):
        prepare(RouterPair(z, ref[:, :4], _spec()))
    with pytest.raises(ValueError, match="num_experts=6"):
        prepare(RouterPair(z[..., :4], ref[..., :4], _spec()))
    bad = z.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteRoutingError):
        prepare(RouterPair(bad, ref, _spec()))
