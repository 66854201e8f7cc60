"""Router taps on a real tiny decoder layer: one record per forward with the
router's own logits, the reference store's 2-byte layout and sample order, and
agreement with the project's metric."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.routers import find_routers
from vsraq_modifier.session.taps import (
    Agreement,
    ReferenceStore,
    RouterTaps,
    TapRecord,
    compact,
)
from vsraq_modifier.testing import tiny_model


def test_compact_keeps_two_bytes_per_value() -> None:
    small = torch.tensor([1.0, -2.5])
    assert compact(small).dtype == torch.float16
    assert compact(torch.tensor([7e4, 0.0])).dtype == torch.bfloat16  # fp16 overflows
    bf = torch.ones(2, dtype=torch.bfloat16)
    assert compact(bf).dtype == torch.bfloat16 and torch.equal(compact(bf), bf)
    assert not compact(small.requires_grad_()).requires_grad


def test_taps_record_each_forward_with_the_router_logits() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=2)
    site = find_routers(model)[0]
    seen: list[torch.Tensor] = []
    site.router.register_forward_hook(lambda _m, _a, out: seen.append(out[0]))
    records: list[TapRecord] = []
    taps = RouterTaps(model.model.layers[0], [site], None, records.append)
    handles = taps.attach()
    ids = torch.randint(0, 128, (2, 5))
    with torch.no_grad():
        model(ids)
        model(ids[:1])
    for h in handles:
        h.remove()
    assert [r.shape for r in records] == [(2, 5), (1, 5)]
    assert list(records[0].logits) == [0]
    assert torch.equal(records[0].logits[0], site.logits((seen[0],)))
    assert "hidden_states" not in records[0].kwargs
    with torch.no_grad():
        model(ids)
    assert len(records) == 2  # hooks removed


def test_a_router_that_does_not_run_is_an_error() -> None:
    model = tiny_model("qwen3_moe", num_hidden_layers=2)
    site = find_routers(model)[0]
    layer = model.model.layers[1]  # the site's router is in layer 0
    taps = RouterTaps(layer, [], None, lambda r: None)
    taps.own = [site]
    taps._pre(layer, (torch.zeros(1, 3, 64),), {})
    with pytest.raises(
        RuntimeError, match=r"router\(s\) \['mlp.gate'\] .* did not run"
    ):
        taps._post(layer, (), torch.zeros(1, 3, 64))


def test_reference_store_order_and_bytes() -> None:
    store = ReferenceStore()
    first = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(6, 4)
    store.add(TapRecord((2, 3), {}, {0: first, "ahead": first + 100}))
    store.add(TapRecord((1, 3), {}, {0: -torch.ones(3, 4), "ahead": torch.zeros(3, 4)}))
    assert store.samples == 3 and store.keys() == [0, "ahead"]
    got = store.get(0, [2, 1])
    assert got.dtype == torch.float32 and got.shape == (6, 4)
    assert torch.equal(got[:3], -torch.ones(3, 4)) and torch.equal(got[3:], first[3:])
    assert store.nbytes == 2 * (3 * 3 * 4) * 2
    assert store.bytes_per_token() == {0: 8, "ahead": 8}


def test_agreement_is_exact_match_per_router() -> None:
    site = find_routers(tiny_model("qwen3_moe", num_hidden_layers=1))[0]
    ref = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    agreement = Agreement()
    agreement.update(0, ref.clone(), ref, site.spec, None)
    flipped = ref.clone()
    flipped[:5] = -flipped[:5]  # the top-2 set changes on these tokens
    agreement.update(3, flipped, ref, site.spec, torch.tensor([True] * 10))
    result = agreement.exact_match()
    assert result[0] == 1.0 and result[3] == 0.5
