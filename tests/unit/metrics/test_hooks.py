"""Oracle routing really replaces the experts a model runs: on a small trained MoE,
forcing random experts wrecks perplexity, forcing the model's own choice changes
nothing, and forcing the reference's choice gives a finite oracle perplexity."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.metrics import RouterForcing, evaluate_model, evaluate_routing
from vsraq_modifier.metrics.evaluate import NextTokenStats, _log_probs, _nll
from vsraq_modifier.routers import find_routers
from vsraq_modifier.testing import tiny_model

E, K, VOCAB = 8, 2, 64


def _sequences(n: int, length: int, g: torch.Generator) -> torch.Tensor:
    """Each sequence follows one of 4 affine rules mod VOCAB: x' = a x + b."""
    x = torch.randint(0, VOCAB, (n, 1), generator=g)
    mode = torch.randint(0, 4, (n, 1), generator=g)
    seq = [x]
    for _ in range(length - 1):
        x = (x * (2 * mode + 3) + 7 * mode + 1) % VOCAB
        seq.append(x)
    return torch.cat(seq, 1)


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A 2-layer MoE trained for a few seconds, so that its experts matter."""
    torch.manual_seed(0)
    model = tiny_model(
        "qwen3_moe",
        num_experts=E,
        num_experts_per_tok=K,
        norm_topk_prob=True,
        vocab_size=VOCAB,
        num_hidden_layers=2,
        hidden_size=32,
        moe_intermediate_size=32,
        head_dim=8,
    ).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        ids = _sequences(8, 32, g)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _perplexity(model: torch.nn.Module, ids: torch.Tensor, forcing=None) -> float:
    stats = NextTokenStats()
    with torch.no_grad():
        if forcing is None:
            stats.nll = _nll(_log_probs(model, ids), ids)
        else:
            with forcing:
                forcing.reset()
                stats.nll = _nll(_log_probs(model, ids), ids)
                forcing.check_called_once()
    stats.count = ids.numel() - 1
    return stats.perplexity


def test_forcing_random_experts_wrecks_perplexity(trained: torch.nn.Module) -> None:
    ids = _sequences(1, 256, torch.Generator().manual_seed(1))[0]
    own = _perplexity(trained, ids)
    assert own < 1.5, "the fixture model did not learn the task"
    forcing = RouterForcing(find_routers(trained))
    g = torch.Generator().manual_seed(2)
    forcing.targets = {
        s.layer: torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(256)])
        for s in forcing.sites
    }
    wrecked = _perplexity(trained, ids, forcing)
    assert wrecked > 2 * own, (own, wrecked)


def test_oracle_against_itself_and_a_perturbed_copy(trained: torch.nn.Module) -> None:
    ids = _sequences(1, 200, torch.Generator().manual_seed(3))[0]
    report = evaluate_routing(
        trained, [("self", "", trained)], ids, seq_len=100, oracle=True, progress=False
    )
    assert report.models[0].oracle_perplexity == report.models[0].perplexity

    noisy = tiny_model(
        "qwen3_moe",
        num_experts=E,
        num_experts_per_tok=K,
        vocab_size=VOCAB,
        num_hidden_layers=2,
        hidden_size=32,
        moe_intermediate_size=32,
        head_dim=8,
    )
    noisy.load_state_dict(trained.state_dict())
    with torch.no_grad():
        for name, p in noisy.named_parameters():
            if "experts" in name:
                p.add_(0.3 * p.abs().mean() * torch.randn_like(p))
    ev, _ = evaluate_model(
        trained, noisy.eval(), ids, seq_len=100, oracle=True, progress=False
    )
    assert ev.mean("jaccard") < 1.0
    assert ev.oracle_perplexity is not None and 1.0 < ev.oracle_perplexity < 1e3
    assert ev.oracle_perplexity != ev.perplexity
