"""The routing objective's reference is the full-precision model's own.

llm-compressor's sequential pipeline feeds the next layer the *quantized*
outputs for any modifier not named exactly ``AutoRoundModifier``
(``propagate_error``), and (transformers 5.17) with eager attention but no
causal mask. ``VSRAQModifier`` keeps the full-precision chain itself
(``fp_chain.py``) and restores the masks (``masks.py``). On tiny models at W3
(Qwen3-MoE; Nemotron-H: Mamba/attention/MoE; gpt-oss: alternating sliding-window
attention) this test shows both halves: the pipeline's inputs to every layer
after the first are the quantized chain (the trap is real here), yet the
reference router logits that ``BlockObjective`` receives, for the layer's own
router and for the look-ahead router, equal the full-precision model's router
logits on the same tokens.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.llmcompressor import (
    load,
    modifier_args,
    run_oneshot,
    tiny_checkpoint,
    token_ids,
)

pytestmark = pytest.mark.slow

# reference logits are stored in float16 (taps.compact): measured 1.2e-4 here
TOL = 5e-4


def _router_logits(model, ids) -> dict[int, torch.Tensor]:
    """{layer: router logits [samples, seq, experts]} of ``model`` on ``ids``."""
    from vsraq_modifier.routers import find_routers

    out: dict[int, torch.Tensor] = {}
    handles = [
        s.router.register_forward_hook(
            lambda _m, _a, o, s=s: out.__setitem__(s.layer, s.logits(o).detach())
        )
        for s in find_routers(model)
    ]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return {k: v.reshape(*ids.shape, -1) for k, v in out.items()}


def _max_sample_error(seen: torch.Tensor, truth: torch.Tensor) -> float:
    """Largest over the batch's samples of the distance to the closest sample of
    ``truth`` (AutoRound visits samples in its own order)."""
    seen = seen.reshape(-1, *truth.shape[1:])
    return max(min(float((row - t).abs().max()) for t in truth) for row in seen.float())


@pytest.mark.parametrize("family", ["qwen3_moe", "nemotron_h", "gpt_oss"])
def test_objective_reference_is_full_precision(family, checkpoints, monkeypatch):
    from vsraq_modifier import VSRAQModifier
    from vsraq_modifier.integrations.llmcompressor import fp_chain
    from vsraq_modifier.integrations.llmcompressor.autoround_per_layer import (
        LLMCompressorVSRAQQuantizer as Quantizer,
    )
    from vsraq_modifier.objective import BlockObjective

    path = tiny_checkpoint(family, checkpoints)
    reference, model = load(path), load(path)
    ids = token_ids(model.config.vocab_size, n=2)
    fp_logits = _router_logits(reference, ids)
    with torch.no_grad():
        fp_hidden = reference(ids, output_hidden_states=True).hidden_states

    layer_of_call: dict[str, int] = {}
    seen: list[tuple[int, list[torch.Tensor]]] = []
    pipeline_hidden: dict[int, list[torch.Tensor]] = {}

    quantize_block = Quantizer.quantize_block

    def spy_quantize_block(self, block, *args, **kwargs):
        layer_of_call["layer"] = self.routing.index_of(block)
        return quantize_block(self, block, *args, **kwargs)

    objective_call = BlockObjective.__call__

    def spy_objective(self, pairs, **kwargs):
        refs = [p.ref_logits.detach().clone() for p in pairs]
        seen.append((layer_of_call["layer"], refs))
        return objective_call(self, pairs, **kwargs)

    substitute = fp_chain.FullPrecisionChain._substitute

    def spy_substitute(self, layers, layer, calls):
        index = next(i for i, m in enumerate(layers) if m is layer)
        pipeline_hidden[index] = [args[0].clone() for args, _ in calls]
        return substitute(self, layers, layer, calls)

    monkeypatch.setattr(Quantizer, "quantize_block", spy_quantize_block)
    monkeypatch.setattr(BlockObjective, "__call__", spy_objective)
    monkeypatch.setattr(fp_chain.FullPrecisionChain, "_substitute", spy_substitute)

    # the look-ahead on every step, so each objective call shows both references
    args = modifier_args("W3A16", batch_size=2, lookahead_every=1)
    run_oneshot(model, VSRAQModifier(**args), ids)

    # 1. the host handed every layer after the first the quantized chain
    n_layers = len(fp_hidden) - 1
    assert torch.equal(torch.cat(pipeline_hidden[0]), fp_hidden[0])
    for layer in range(1, n_layers):
        got = torch.cat(pipeline_hidden[layer])
        assert (got - fp_hidden[layer]).abs().max() > 10 * TOL, layer

    # 2. the objective saw full-precision reference logits: the layer's own
    #    router (if it has one) and the next MoE router downstream (look-ahead)
    moe = sorted(fp_logits)
    assert {layer for layer, _ in seen} == {i for i in range(n_layers) if i <= moe[-1]}
    for layer, refs in seen:
        expected = [i for i in moe if i == layer] + [i for i in moe if i > layer][:1]
        assert len(refs) == len(expected), (layer, len(refs))
        for ref, router_layer in zip(refs, expected):
            err = _max_sample_error(ref, fp_logits[router_layer])
            assert err < TOL, (layer, router_layer, err)

    # 3. and a quantized-chain reference would have been told apart
    q_logits = _router_logits(model, ids)
    assert (q_logits[moe[-1]] - fp_logits[moe[-1]]).abs().max() > 10 * TOL
