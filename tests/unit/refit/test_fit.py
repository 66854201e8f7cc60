"""The router re-fit (vsraq_modifier/refit.py): exact cases, well-posedness, dtypes,
non-finite inputs, padding, the held-aside safeguard, sigmoid routers."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.objective.pair import NonFiniteRoutingError
from vsraq_modifier.refit import (
    RefitOptions,
    boundary_weights,
    fit_router,
    jaccard,
    jaccard_per_token,
    refit_router,
    resolved_target,
    solve_device,
)
from vsraq_modifier.routing import RouterSpec

SOFTMAX = RouterSpec(num_experts=8, top_k=2, normalize=True)
LOGITS = RouterSpec(
    num_experts=8,
    top_k=2,
    score_fn="logits",
    weight_fn="softmax_selected",
    score_dtype="input",
)


def sigmoid_spec(bias: torch.Tensor | None = None) -> RouterSpec:
    return RouterSpec(
        num_experts=8,
        top_k=2,
        score_fn="sigmoid",
        normalize=True,
        bias=bias,
        n_group=4,
        topk_group=2,
        sorted_topk=False,
    )


def ridge(r: float = 1e-3, **kw) -> RefitOptions:
    return RefitOptions(method="ridge", ridge=r, **kw)


def data(t: int = 512, h: int = 16, e: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, h, generator=g, dtype=torch.float64)
    w = torch.randn(e, h, generator=g, dtype=torch.float64) * 0.5
    return x, w, g


@pytest.mark.parametrize("target", ["centred", "logits"])
def test_no_input_error_leaves_the_router_unchanged(target):
    x, w, _ = data()
    fit, before, after = fit_router(
        w, None, SOFTMAX, x, x @ w.T, options=ridge(target=target)
    )
    assert torch.allclose(fit.weight, w, atol=1e-12) and before < 1e-20
    b = torch.randn(8, dtype=torch.float64)
    fit, _, _ = fit_router(w, b, LOGITS, x, x @ w.T + b, options=ridge(target=target))
    assert torch.allclose(fit.weight, w, atol=1e-12)
    assert torch.allclose(fit.bias, b, atol=1e-12)


def test_known_linear_distortion_is_undone():
    """x^q = M x: the reference logits W x equal (W M^-1) x^q exactly."""
    x, w, g = data(t=2048)
    m = torch.eye(16, dtype=torch.float64) + 0.2 * torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    xq = x @ m.T
    want = w @ torch.linalg.inv(m)
    fit, before, after = fit_router(
        w, None, SOFTMAX, xq, x @ w.T, options=ridge(1e-12, target="logits")
    )
    assert torch.allclose(fit.weight, want, atol=1e-6) and after < 1e-10 < before
    # centred: only the centred rows are determined; the mean row stays W's
    fit, _, _ = fit_router(
        w, None, SOFTMAX, xq, x @ w.T, options=ridge(1e-12, target="centred")
    )
    centre = torch.eye(8, dtype=torch.float64) - 1 / 8
    assert torch.allclose(centre @ fit.weight, centre @ want, atol=1e-6)
    assert torch.allclose(fit.weight.mean(0), w.mean(0), atol=1e-9)


def test_a_shifted_input_moves_into_the_bias():
    """gpt-oss: x^q = x + v gives W x + b = W x^q + (b - W v)."""
    x, w, g = data(t=1024)
    b = torch.randn(8, dtype=torch.float64, generator=g)
    v = 0.3 * torch.randn(16, dtype=torch.float64, generator=g)
    fit, _, after = fit_router(
        w, b, LOGITS, x + v, x @ w.T + b, options=ridge(1e-12, target="logits")
    )
    assert torch.allclose(fit.weight, w, atol=1e-6)
    assert torch.allclose(fit.bias, b - w @ v, atol=1e-6) and after < 1e-10


def test_fewer_tokens_than_hidden_size_is_well_posed():
    x, w, g = data(t=8, h=64)
    xq = x + 0.1 * torch.randn(8, 64, generator=g, dtype=torch.float64)
    fit, before, after = fit_router(w, None, SOFTMAX, xq, x @ w.T, options=ridge(1e-2))
    assert torch.isfinite(fit.weight).all() and after < before
    strong, _, _ = fit_router(w, None, SOFTMAX, xq, x @ w.T, options=ridge(1e6))
    assert torch.allclose(strong.weight, w, atol=1e-4)  # the ridge pulls towards W


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtype_and_shape_are_kept(dtype):
    x, w, g = data()
    b = torch.randn(8, generator=g, dtype=torch.float64)
    xq = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(dtype)
    fit, _, _ = fit_router(w.to(dtype), b.to(dtype), LOGITS, xq, x @ w.T + b)
    assert fit.weight.dtype == dtype and fit.weight.shape == (8, 16)
    assert fit.bias.dtype == dtype and fit.bias.shape == (8,)
    res = refit_router(
        w.to(dtype), None, SOFTMAX, xq, x @ w.T, options=ridge(), dtype=torch.bfloat16
    )
    assert res.fit.weight.dtype == (torch.bfloat16 if res.accepted else dtype)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["x_q", "ref_logits", "weight"])
def test_non_finite_inputs_raise(bad, where):
    x, w, _ = data()
    ref = x @ w.T
    {"x_q": x, "ref_logits": ref, "weight": w}[where][3, 2] = bad
    with pytest.raises(NonFiniteRoutingError, match=where):
        fit_router(w, None, SOFTMAX, x, ref)
    with pytest.raises(NonFiniteRoutingError, match=where):
        refit_router(w, None, SOFTMAX, x, ref)


def test_padding_tokens_take_no_part():
    x, w, g = data(t=300)
    xq = x + 0.2 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    ref = x @ w.T
    pad_x = torch.full((40, 16), float("nan"), dtype=torch.float64)
    pad_z = torch.randn(40, 8, generator=g, dtype=torch.float64) * 1e6
    mask = torch.cat(
        [torch.ones(300, dtype=torch.bool), torch.zeros(40, dtype=torch.bool)]
    )
    plain, e0, e1 = fit_router(w, None, SOFTMAX, xq, ref)
    padded, p0, p1 = fit_router(
        w, None, SOFTMAX, torch.cat([xq, pad_x]), torch.cat([ref, pad_z]), mask
    )
    assert torch.equal(plain.weight, padded.weight) and (e0, e1) == (p0, p1)
    a = refit_router(w, None, SOFTMAX, xq, ref)
    b = refit_router(
        w, None, SOFTMAX, torch.cat([xq, pad_x]), torch.cat([ref, pad_z]), mask
    )
    assert (
        torch.equal(a.fit.weight, b.fit.weight)
        and a.agreement_after == b.agreement_after
    )


def test_safeguard_keeps_the_original_when_the_fit_hurts_held_aside_tokens():
    """Reference logits = W x + noise, x^q = x: a nearly unregularised fit on few
    tokens fits the noise and routes the held-aside tokens worse."""
    x, w, g = data(t=48, h=32)
    ref = x @ w.T + 1.5 * torch.randn(48, 8, generator=g, dtype=torch.float64)
    res = refit_router(w, None, SOFTMAX, x, ref, options=ridge(1e-9, holdout=0.5))
    assert res.agreement_after < res.agreement_before
    assert res.fit_error_after < res.fit_error_before  # it did fit the fit tokens
    assert not res.accepted and res.fit.weight is w
    forced = refit_router(w, None, SOFTMAX, x, ref, options=ridge(1e-9, holdout=0.0))
    assert forced.accepted and not torch.equal(forced.fit.weight, w)


def test_safeguard_keeps_a_fit_that_helps():
    x, w, g = data(t=2048)
    m = torch.eye(16, dtype=torch.float64) + 0.3 * torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    res = refit_router(w, None, SOFTMAX, x @ m.T, x @ w.T, options=ridge(1e-8))
    assert res.accepted and res.agreement_after > res.agreement_before
    assert res.fit_tokens + res.held_tokens == 2048 and res.held_tokens == 512
    assert res.agreement_after == pytest.approx(1.0, abs=0.005)


def test_safeguard_refuses_a_gain_within_its_standard_error():
    """A small distortion and noisy reference logits on 100 held-aside tokens: the
    fit gains a little agreement there, less than one standard error of the paired
    per-token gain. ``accept_se=0`` (the default) keeps it, ``accept_se=1`` does
    not."""
    g = torch.Generator().manual_seed(10)
    x = torch.randn(400, 16, generator=g, dtype=torch.float64)
    w = torch.randn(8, 16, generator=g, dtype=torch.float64) * 0.5
    m = torch.eye(16, dtype=torch.float64) + 0.05 * torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    ref = x @ w.T + 0.3 * torch.randn(400, 8, generator=g, dtype=torch.float64)
    xq = x @ m.T
    any_gain = refit_router(w, None, SOFTMAX, xq, ref, options=ridge())
    gain = any_gain.agreement_after - any_gain.agreement_before
    assert RefitOptions().accept_se == 0.0
    assert any_gain.accepted and 0 < gain < any_gain.agreement_se
    strict = refit_router(w, None, SOFTMAX, xq, ref, options=ridge(accept_se=1))
    assert not strict.accepted and strict.fit.weight is w
    assert strict.agreement_se == any_gain.agreement_se
    # the standard error is the paired per-token one, on the held-aside tokens
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    held = perm[:100]
    j0 = jaccard_per_token(xq[held].float() @ w.float().T, ref[held].float(), SOFTMAX)
    assert j0.mean().item() == pytest.approx(strict.agreement_before)
    half = refit_router(w, None, SOFTMAX, xq, ref, options=ridge(accept_se=0.5))
    assert half.accepted == (gain > 0.5 * strict.agreement_se)
    assert "se " in strict.summary() and "kept the original" in strict.summary()


def test_method_none_changes_nothing():
    x, w, _ = data()
    res = refit_router(w, None, SOFTMAX, x + 1, x @ w.T, options=RefitOptions())
    assert not res.accepted and res.fit.weight is w


@pytest.mark.parametrize("correction_bias", [False, True])
def test_sigmoid_router_fit_in_score_space(correction_bias):
    """DeepSeek-V3-style router (sigmoid, correction bias, 4 groups, top-2 of 2
    groups): the Gauss-Newton fit lowers the score-space error and raises held-aside
    agreement on a linear input distortion; a fitted correction bias keeps dtype."""
    x, w, g = data(t=2048)
    w = w * 3
    bias = (0.1 * torch.randn(8, generator=g)).float()
    spec = sigmoid_spec(bias)
    m = torch.eye(16, dtype=torch.float64) + 0.3 * torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    opts = ridge(1e-4, target="sigmoid", iters=3, correction_bias=correction_bias)
    res = refit_router(w.float(), None, spec, x @ m.T, x @ w.T, options=opts)
    assert res.fit_error_after < 0.2 * res.fit_error_before
    assert res.accepted and res.agreement_after > res.agreement_before
    c = res.fit.correction_bias
    assert c.dtype == torch.float32 and c.shape == (8,)
    assert torch.equal(c, bias) != correction_bias


def test_boundary_weights_mark_the_k_th_and_next_expert():
    z = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])
    w = boundary_weights(z, SOFTMAX)
    assert w.tolist() == [[0, 1, 1, 0, 0, 0, 0, 0]]
    # groups of 2: group sums 9, 5, 1, -3; kept groups 0, 1 -> k-th/(k+1)-th in them
    # are experts 1, 2, and the group boundary adds group 1's and group 2's experts
    w = boundary_weights(z, sigmoid_spec())
    assert w[0, [1, 2, 3, 4, 5]].tolist() == [1, 1, 1, 1, 1] and w[0, 0] == 0


def test_options_are_checked():
    with pytest.raises(ValueError, match="ridge"):
        RefitOptions(ridge=0.0)
    with pytest.raises(ValueError, match="holdout"):
        RefitOptions(holdout=1.0)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="accept_se"):
            RefitOptions(accept_se=bad)
    with pytest.raises(ValueError, match="sigmoid"):
        resolved_target(SOFTMAX, "sigmoid")
    with pytest.raises(ValueError, match="shared shift"):
        resolved_target(sigmoid_spec(), "centred")
    assert resolved_target(sigmoid_spec(), "auto") == "logits"
    assert resolved_target(LOGITS, "auto") == "centred"


def test_jaccard_of_identical_logits_is_one():
    z = torch.randn(50, 8)
    assert jaccard(z, z, SOFTMAX) == 1.0


def test_refit_all_fits_again_on_every_token_once_kept():
    x, w, g = data(t=1024)
    m = torch.eye(16, dtype=torch.float64) + 0.3 * torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    xq, ref = x @ m.T, x @ w.T
    res = refit_router(w, None, SOFTMAX, xq, ref, options=ridge(1e-3, refit_all=True))
    full, _, _ = fit_router(w, None, SOFTMAX, xq, ref, options=ridge(1e-3))
    assert res.accepted and torch.equal(res.fit.weight, full.weight)
    part = refit_router(w, None, SOFTMAX, xq, ref, options=ridge(1e-3, refit_all=False))
    assert not torch.equal(part.fit.weight, full.weight)


def test_docs_print_the_code_defaults():
    from pathlib import Path

    from vsraq_modifier.cli.refit import DEFAULT_NSAMPLES, DEFAULT_SEQLEN
    from vsraq_modifier.refit import DEFAULT_RIDGE

    doc = (Path(__file__).resolve().parents[3] / "docs" / "refit.md").read_text()
    opts = RefitOptions()
    assert f"`--ridge` (default {DEFAULT_RIDGE:g})" in doc
    assert f"`--holdout` ({opts.holdout:g})" in doc and opts.refit_all
    assert f"`--accept-se` ({opts.accept_se:g})" in doc
    assert f"(defaults {DEFAULT_NSAMPLES} x {DEFAULT_SEQLEN}, seed 0)" in doc
    assert opts.target == "auto" and opts.weights == "uniform"


def test_apply_fit_writes_a_kept_fit_in_place():
    from vsraq_modifier.refit import apply_fit

    x, w, g = data(t=2048)
    m = torch.eye(16, dtype=torch.float64) + 0.3 * torch.randn(
        16, 16, generator=g, dtype=torch.float64
    )
    router = torch.nn.Linear(16, 8, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        router.weight.copy_(w)
    ptr = router.weight.data_ptr()
    res = refit_router(router.weight, None, SOFTMAX, x @ m.T, x @ w.T)
    assert apply_fit(router, SOFTMAX, res) and router.weight.data_ptr() == ptr
    assert router.weight.dtype == torch.bfloat16
    assert torch.equal(router.weight, res.fit.weight)
    # a fit the safeguard refuses (noise fitted on few tokens) changes nothing
    xs, ws, gs = data(t=48, h=32)
    noisy = xs @ ws.T + 1.5 * torch.randn(48, 8, generator=gs, dtype=torch.float64)
    small = torch.nn.Linear(32, 8, bias=False).double()
    with torch.no_grad():
        small.weight.copy_(ws)
    refused = refit_router(
        small.weight, None, SOFTMAX, xs, noisy, options=ridge(1e-9, holdout=0.5)
    )
    assert not apply_fit(small, SOFTMAX, refused)
    assert torch.equal(small.weight, ws)


def test_all_padding_keeps_the_router():
    x, w, _ = data(t=20)
    mask = torch.zeros(20, dtype=torch.bool)
    res = refit_router(w, None, SOFTMAX, x + 1, x @ w.T, mask)
    assert not res.accepted and res.fit.weight is w and res.fit_tokens == 0


def test_correction_bias_needs_the_sigmoid_target():
    """auto is the logits target on a sigmoid router, where the selection bias
    has no part: asking to fit it there is refused, not ignored."""
    x, w, _ = data(t=256)
    spec = sigmoid_spec(torch.zeros(8))
    with pytest.raises(ValueError, match="correction_bias=True.*target='sigmoid'"):
        refit_router(w, None, spec, x, x @ w.T, options=ridge(correction_bias=True))


def test_the_solve_runs_on_the_routers_cuda_device_or_on_the_cpu():
    """float64 solves: on the router's own CUDA device (fast there), on the CPU
    for every other device (MPS has no float64)."""
    assert solve_device("cuda:1") == torch.device("cuda", 1)
    assert solve_device(torch.device("cuda")) == torch.device("cuda")
    for other in ("cpu", "mps", "xpu:0", "meta"):
        assert solve_device(other) == torch.device("cpu")


def test_an_explicit_cpu_solve_is_the_default_one_bit_for_bit():
    torch.manual_seed(3)
    w, x = torch.randn(8, 16), torch.randn(400, 16)
    x_q = x @ (torch.eye(16) + 0.5 * torch.randn(16, 16))  # a linear distortion
    opts = RefitOptions(method="ridge")
    a = refit_router(w, None, SOFTMAX, x_q, x @ w.T, None, opts)
    b = refit_router(w, None, SOFTMAX, x_q, x @ w.T, None, opts, device="cpu")
    assert a.accepted and b.accepted
    assert torch.equal(a.fit.weight, b.fit.weight) and a.fit.weight.device == w.device
