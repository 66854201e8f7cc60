"""Oracle forcing through AutoRound's rewritten Qwen3-MoE block, what an auto_round
checkpoint loads as: its gate is a bare ``nn.Linear`` and the block computes the top-k
inline, so forcing rewrites the logits. The block must then run exactly the forced
experts with the model's own renormalised weights over them."""

from __future__ import annotations

import importlib

import pytest
import torch

from vsraq_modifier.metrics import RouterForcing, RoutingCapture
from vsraq_modifier.routers import find_routers
from vsraq_modifier.routing import dense_weights
from vsraq_modifier.testing import tiny_model


def test_forcing_autoround_linear_block(monkeypatch) -> None:
    from auto_round.modeling.unfused_moe import apply_modeling_patch

    model = tiny_model("qwen3_moe")  # norm_topk_prob=True
    assert apply_modeling_patch(model) is True
    sites = find_routers(model)
    assert all(type(s.router) is torch.nn.Linear for s in sites)

    module = importlib.import_module(type(sites[0].block).__module__)
    real = module.sequential_moe_forward
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(hidden, top_k_index, top_k_weights, experts, num_experts):
        calls.append((top_k_index, top_k_weights))
        return real(hidden, top_k_index, top_k_weights, experts, num_experts)

    monkeypatch.setattr(module, "sequential_moe_forward", spy)
    # registered before the forcing hooks, so it sees each gate's own logits
    raw: dict[int, torch.Tensor] = {}
    for s in sites:
        s.router.register_forward_hook(
            lambda mod, args, out, layer=s.layer: raw.__setitem__(layer, out.clone())
        )
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    capture, forcing = RoutingCapture(sites), RouterForcing(sites)
    with torch.no_grad():
        with capture:
            capture.reset()
            plain = model(input_ids=ids).logits
        forcing.targets = {k: r.indices for k, r in capture.routings.items()}
        with forcing:
            own = model(input_ids=ids).logits
        g = torch.Generator().manual_seed(1)
        forcing.targets = {
            s.layer: torch.stack(
                [torch.randperm(8, generator=g)[:2] for _ in range(40)]
            )
            for s in sites
        }
        calls.clear()
        with forcing:
            forcing.reset()
            forced = model(input_ids=ids).logits
            forcing.check_called_once()
    torch.testing.assert_close(own, plain)
    assert not torch.allclose(forced, plain)
    for site, (index, weights) in zip(sites, calls, strict=True):
        target = forcing.targets[site.layer]
        assert torch.equal(index.sort(-1)[0], target.sort(-1)[0])
        # the weights are the model's own over the forced set, renormalised
        expected = dense_weights(raw[site.layer], index, site.spec).gather(-1, index)
        torch.testing.assert_close(weights, expected)


@pytest.mark.parametrize("normalize", [False])
def test_forcing_bare_logits_without_renormalisation_is_refused(normalize) -> None:
    from vsraq_modifier.metrics.hooks import forced_output
    from vsraq_modifier.routing import RouterSpec

    spec = RouterSpec(num_experts=4, top_k=2, normalize=normalize)
    logits = torch.randn(3, 4)
    with pytest.raises(NotImplementedError, match="norm_topk_prob"):
        forced_output(logits, logits, torch.tensor([[0, 1]] * 3), spec)
    # the tuple form works for any spec: weights from dense_weights over the set
    out = forced_output(
        (logits, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.long)),
        logits,
        torch.tensor([[2, 0]] * 3),
        spec,
    )
    expected = dense_weights(logits, torch.tensor([[2, 0]] * 3), spec)
    torch.testing.assert_close(out[1], expected.gather(-1, out[2]))
