"""VSRAQConfig owns every option rule: ranges, finite floats, no unknown option, and
no option that the chosen loss would ignore."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from vsraq_modifier.config import LOSS_OPTIONS, MAX_WEIGHT, ROUTING_LOSSES, VSRAQConfig


def test_defaults_are_the_documented_ones() -> None:
    c = VSRAQConfig()
    assert (c.loss, c.value_weight, c.structure_weight) == ("vsraq", 1.0, 0.25)
    assert (c.value_target, c.structure, c.temperature) == ("logits", "margin", None)
    assert c.lookahead and c.lookahead_every == 2 and c.is_routing_loss
    assert c.user_options() == {}


@pytest.mark.parametrize("loss", ["mse", *ROUTING_LOSSES])
def test_router_refit_auto_is_on_with_a_routing_loss_only(loss: str) -> None:
    # mse's default stays AutoRound's own result; asking is honoured either way
    auto = VSRAQConfig(loss=loss)
    assert auto.router_refit == "auto"
    assert auto.refit_method == ("none" if loss == "mse" else "ridge")
    assert VSRAQConfig(loss=loss, router_refit="none").refit_method == "none"
    for name in ("router_refit_ridge", "router_refit_accept_se"):
        assert VSRAQConfig(loss=loss, router_refit="ridge", **{name: 0.1})
        # a setting of a re-fit that does not run would change nothing
        with pytest.raises(ValidationError, match=f"{name}.*router re-fit is off"):
            VSRAQConfig(loss=loss, router_refit="none", **{name: 0.1})
        if loss == "mse":
            with pytest.raises(ValidationError, match="router re-fit is off"):
                VSRAQConfig(loss=loss, **{name: 0.1})
    assert VSRAQConfig(loss=loss, router_refit="ridge", router_refit_target="logits")
    with pytest.raises(ValidationError, match="router_refit_target.*re-fit is off"):
        VSRAQConfig(loss=loss, router_refit="none", router_refit_target="logits")
    with pytest.raises(ValidationError, match="router_refit_target"):
        VSRAQConfig(router_refit_target="softmax")


def test_refit_defaults_are_the_fit_modules() -> None:
    """The options' defaults and RefitOptions' (what `vsraq refit` uses) agree."""
    from vsraq_modifier.refit import RefitOptions

    c, r = VSRAQConfig(), RefitOptions()
    assert (c.router_refit_ridge, c.router_refit_accept_se) == (r.ridge, r.accept_se)
    assert c.router_refit_target == r.target == "auto"
    for bad in (-0.1, float("nan"), 11.0):
        with pytest.raises(ValidationError, match="router_refit_accept_se"):
            VSRAQConfig(router_refit_accept_se=bad)


@pytest.mark.parametrize(
    "field", ["value_weight", "structure_weight", "margin", "temperature"]
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_must_be_finite(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        VSRAQConfig(**{field: value})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"value_weight": -0.1}, "greater than or equal to 0"),
        ({"structure_weight": MAX_WEIGHT * 2}, "less than or equal to"),
        ({"temperature": 0.0}, "greater than 0"),
        ({"lookahead_every": 0}, "greater than or equal to 1"),
        ({"loss": "l2"}, "'mse', 'topk_mse', 'router_kl' or 'vsraq'"),
        ({"margn": 0.1}, "Extra inputs are not permitted"),
    ],
)
def test_out_of_range_and_unknown_options(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        VSRAQConfig(**options)


def test_an_option_the_loss_ignores_is_an_error_naming_both() -> None:
    with pytest.raises(
        ValidationError, match="margin has no effect with loss='topk_mse'"
    ):
        VSRAQConfig(loss="topk_mse", margin=0.1)
    with pytest.raises(ValidationError, match="loss='mse'.*routing loss"):
        VSRAQConfig(loss="mse", lookahead=False)
    # the same option is fine with a loss that reads it, and defaults never count
    assert VSRAQConfig(loss="topk_mse", value_weight=2.0).value_weight == 2.0
    assert not VSRAQConfig(loss="mse").is_routing_loss


def test_every_loss_reads_only_fields_that_exist() -> None:
    fields = set(VSRAQConfig.model_fields)
    assert set(LOSS_OPTIONS) == {"mse", *ROUTING_LOSSES}
    for loss, options in LOSS_OPTIONS.items():
        assert options <= fields - {"loss"}, loss
        values = {name: getattr(VSRAQConfig(), name) for name in options}
        values["router_refit"] = "ridge"  # router_refit_ridge needs the re-fit on
        VSRAQConfig(loss=loss, **values)


def test_frozen_and_user_options_are_the_ones_set() -> None:
    c = VSRAQConfig(margin=0.1, lookahead=False)
    assert c.user_options() == {"margin": 0.1, "lookahead": False}
    with pytest.raises(ValidationError):
        c.margin = 0.2  # type: ignore[misc]
