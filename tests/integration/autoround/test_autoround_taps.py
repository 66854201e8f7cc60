"""Router taps and the compact reference store (no AutoRound run needed)."""

from __future__ import annotations

import torch

from vsraq_modifier.lookahead import next_router_path
from vsraq_modifier.routers import find_routers
from vsraq_modifier.routers.base import decoder_layers
from vsraq_modifier.routing import RouterSpec
from vsraq_modifier.session.taps import (
    AHEAD,
    Agreement,
    ReferenceStore,
    RouterTaps,
    TapRecord,
    compact,
)
from vsraq_modifier.testing import tiny_model


def test_compact_is_two_bytes_and_close():
    z = torch.randn(5, 8) * 4
    c = compact(z)
    assert c.dtype == torch.float16 and torch.allclose(c.float(), z, rtol=1e-3)
    assert compact(torch.full((2, 2), 1e5)).dtype == torch.bfloat16  # fp16 overflow
    bf = z.to(torch.bfloat16)
    assert torch.equal(compact(bf), bf)  # 16-bit logits are kept as they are


def test_reference_store_keeps_sample_order_across_batches():
    store = ReferenceStore()
    for start in (0, 3):  # two batches of 3 samples x 2 tokens x 4 experts
        z = torch.arange(start * 8, (start + 3) * 8, dtype=torch.float32)
        store.add(TapRecord(shape=(3, 2), kwargs={}, logits={0: z.reshape(6, 4)}))
    assert store.samples == 6
    got = store.get(0, [4, 1])
    assert got.dtype == torch.float32 and got.shape == (4, 4)
    assert got[0, 0] == 4 * 8 and got[2, 0] == 1 * 8  # sample 4, then sample 1
    assert store.bytes_per_token() == {0: 4 * 2}
    assert store.nbytes == 6 * 2 * 4 * 2


def test_agreement_counts_valid_tokens_with_the_same_expert_set():
    spec = RouterSpec(num_experts=4, top_k=2)
    ref = torch.tensor([[4.0, 3, 0, 0], [4.0, 3, 0, 0], [4.0, 3, 0, 0]])
    q = torch.tensor([[3.0, 4, 0, 0], [4.0, 0, 3, 0], [0.0, 0, 3, 4]])
    table = Agreement()
    table.update(7, q, ref, spec, mask=torch.tensor([True, True, False]))
    assert table.exact_match() == {7: 0.5}  # same set (order ignored), flipped


def test_taps_record_own_and_lookahead_logits_with_the_block_kwargs():
    model = tiny_model("qwen3_moe")
    layers, sites = list(decoder_layers(model)), find_routers(model)
    path = next_router_path(layers, sites, 0)
    records: list[TapRecord] = []
    taps = RouterTaps(layers[0], [sites[0]], path, records.append)
    seen: list[torch.Tensor] = []
    handles = [
        *taps.attach(),
        sites[1].router.register_forward_hook(
            lambda m, a, out: seen.append(sites[1].logits(out))
        ),
    ]
    with torch.no_grad():
        model(torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0)))
    for h in handles:
        h.remove()
    (rec,) = records
    assert rec.shape == (2, 5)
    assert "position_embeddings" in rec.kwargs and "hidden_states" not in rec.kwargs
    assert rec.logits[0].shape == (10, 8)
    # the look-ahead ran layer 1 up to its router on layer 0's output: the same
    # logits the model's own forward then computes (seen[0]: look-ahead, [1]: model)
    assert len(seen) == 2
    assert torch.allclose(rec.logits[AHEAD], seen[1], atol=1e-6)
