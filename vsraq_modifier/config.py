"""The VSRAQ options: one validated definition shared by the CLI, the Python API and
llm-compressor recipes (names as in docs/objective.md)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["LOSS_OPTIONS", "LossName", "MAX_WEIGHT", "ROUTING_LOSSES", "VSRAQConfig"]

LossName = Literal["mse", "topk_mse", "router_kl", "vsraq"]
#: losses that add a routing term to the host's reconstruction loss
ROUTING_LOSSES: tuple[str, ...] = ("topk_mse", "router_kl", "vsraq")
#: largest term weight: above about 1e7 the host's loss falls below float32's
#: resolution of the sum (SignSGD then follows the routing terms alone), and a
#: float32 block loss overflows long before 1e38
MAX_WEIGHT = 1e6
#: the options each loss reads (any other option set with it would do nothing)
_REFIT = {
    "router_refit",
    "router_refit_ridge",
    "router_refit_accept_se",
    "router_refit_target",
}
_ROUTING = {
    "lookahead",
    "lookahead_every",
    "lookahead_attention",
    "best_iteration",
    "max_flip_share",
    *_REFIT,
}
LOSS_OPTIONS: dict[str, frozenset[str]] = {
    "mse": frozenset(_REFIT),
    "topk_mse": frozenset({"value_weight", *_ROUTING}),
    "router_kl": frozenset({"value_weight", *_ROUTING}),
    "vsraq": frozenset(
        {
            *_ROUTING,
            "value_weight",
            "structure_weight",
            "margin",
            "value_target",
            "structure",
            "temperature",
        }
    ),
}


class VSRAQConfig(BaseModel):
    """Options of the routing-aware objective.

    ``loss="mse"`` is the host's own loss, unchanged; the other losses add a routing
    term (see docs/objective.md for the math behind each option).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: LossName = Field(
        "vsraq",
        description="mse: host loss only; topk_mse / router_kl: baselines; "
        "vsraq: value + structure alignment.",
    )
    value_weight: float = Field(
        1.0,
        ge=0.0,
        le=MAX_WEIGHT,
        description="lambda_v: weight of the value term (0 switches it off).",
    )
    structure_weight: float = Field(
        0.25,
        ge=0.0,
        le=MAX_WEIGHT,
        description="lambda_s: weight of the structure term (0 switches it off); "
        "0.25: its per-token hinges fit the calibration tokens and add sign noise "
        "(docs/results.md).",
    )
    margin: float = Field(
        0.05,
        ge=0.0,
        description="delta: target gap between the k-th selected and the best "
        "unselected selection score (capped per token by the reference's own gap).",
    )
    value_target: Literal["logits", "scores", "both"] = Field(
        "logits",
        description="what the value term matches: router logits (default), routing "
        "weights of the selected experts, or both (the weights' gradient is mostly "
        "noise under SignSGD: docs/results.md).",
    )
    structure: Literal["margin", "set_nll"] = Field(
        "margin",
        description="margin: boundary + order hinges; set_nll: negative log-likelihood "
        "of the reference top-k set under the exact-k subset distribution.",
    )
    temperature: float | None = Field(
        None,
        gt=0.0,
        description="tau of the sensitivity weights softmax(-margin/tau); default: the "
        "batch's median reference margin.",
    )
    lookahead: bool = Field(
        True,
        description="also align the next MoE router downstream, reached through the "
        "full-precision layers in between (gives expert weights a routing gradient).",
    )

    lookahead_every: int = Field(
        2,
        ge=1,
        description="run the look-ahead on every n-th tuning step only. Default 2: "
        "on the validation split it routed as well as every step (with the router "
        "re-fit) for about half the look-ahead's cost, which is most of VSRAQ's "
        "extra time; 1: every step (the default before); docs/results.md gives "
        "the measured trade-off.",
    )

    lookahead_attention: Literal["full", "reference"] = Field(
        "reference",
        description="the attention of the layers the look-ahead runs through. "
        "full: run again on the tuned block's output, with its gradient. "
        "reference: its output on the full-precision model (recorded on the "
        "reference pass, one hidden vector per calibration token and look-ahead "
        "layer) is used instead, so the router's input still carries the block's "
        "error through the residual stream but neither the attention's forward "
        "nor its backward runs on tuning steps (about half the look-ahead's "
        "cost). The agreement passes run the whole path either way. Default "
        "reference: on the validation split it kept quantization time within "
        "1.15x mse's at about 0.02x more of mse's routing disagreement than full "
        '(docs/results.md, "The look-ahead\'s attention at the reference").',
    )

    best_iteration: Literal["host", "total"] = Field(
        "host",
        description="the loss that picks which tuning iteration's rounding the "
        "host keeps (AutoRound keeps its best iteration). host (default, the "
        "safeguard): the routing terms shape every step, but the kept rounding is "
        "the one with the lowest block reconstruction loss among the iterations "
        "run, as AutoRound alone would choose, so the routing terms cannot buy "
        "agreement with the block's own output error at selection; total: host + "
        "routing loss (before 0.2; docs/results.md measures both).",
    )

    max_flip_share: float | None = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="the safeguard on the step: at a block's first tuning step, "
        "the routing terms are scaled down (never up) until they overturn at most "
        "this share of the host's SignSGD step signs (the parameters the host's "
        "gradient moves); the scale holds for the block's whole tuning. None: no "
        "cap. Costs two extra gradients per block (docs/objective.md).",
    )

    router_refit: Literal["auto", "none", "ridge"] = Field(
        "auto",
        description="ridge: re-fit each full-precision router, once its block is "
        "tuned, to the inputs it sees in the quantized model (closed-form ridge, "
        "kept only where it raises routing agreement on held-aside calibration "
        "tokens; docs/objective.md). auto (default): ridge with a routing loss, "
        "none with loss mse (AutoRound's own result, bit for bit); with "
        "llm-compressor, auto leaves it off where the recipe quantizes the "
        "routers (logged). none: off.",
    )
    router_refit_ridge: float = Field(
        1e-3,
        gt=0.0,
        le=1e3,
        description="relative ridge strength of the router re-fit (scale-free: "
        "relative to the data term and the mean square router input).",
    )
    router_refit_accept_se: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="the re-fit's safeguard: a router's fit is kept only if its "
        "gain in routing agreement (mean Jaccard) on the held-aside calibration "
        "tokens exceeds this many standard errors of that gain. 0 (default): "
        "any gain, which the validation split supports (docs/refit.md); 1 or "
        "more also refuses gains within the noise of the held-aside tokens.",
    )
    router_refit_target: Literal["auto", "logits", "centred", "sigmoid"] = Field(
        "auto",
        description="what the router re-fit matches. auto (default): the centred "
        "logits for softmax and top-k-of-logits routers, the reference logits "
        "themselves for sigmoid routers (DeepSeek-V3 family; one Gram matrix "
        "shared by the experts); sigmoid (sigmoid routers only): a fit in score "
        "space, one Gram matrix per expert, E times the cost, which routed no "
        "better on the validation split; logits and centred (not for sigmoid "
        "routers) force the others (docs/refit.md).",
    )

    @field_validator(
        "value_weight",
        "structure_weight",
        "margin",
        "temperature",
        "max_flip_share",
        "router_refit_ridge",
        "router_refit_accept_se",
    )
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _no_idle_options(self) -> VSRAQConfig:
        """An option set explicitly that the chosen loss does not read is an
        error: the user believes it changes the run, and it does not."""
        used = LOSS_OPTIONS[self.loss] | {"loss"}
        idle = sorted(set(self.model_fields_set) - used)
        if idle:
            reads = (
                " (AutoRound's own loss; the routing options need a routing loss, "
                "e.g. loss='vsraq'; mse reads only " + ", ".join(sorted(_REFIT)) + ")"
                if self.loss == "mse"
                else "; it reads " + ", ".join(sorted(LOSS_OPTIONS[self.loss]))
            )
            raise ValueError(
                f"{', '.join(idle)} has no effect with loss={self.loss!r}{reads}. "
                "Remove the option or choose a loss that uses it"
            )
        idle_refit = sorted((_REFIT - {"router_refit"}) & set(self.model_fields_set))
        if idle_refit and self.refit_method == "none":
            raise ValueError(
                f"{', '.join(idle_refit)} has no effect with router_refit="
                f"{self.router_refit!r} and loss={self.loss!r}: the router re-fit is "
                "off. Remove the option or set router_refit='ridge'"
            )
        return self

    def user_options(self) -> dict[str, object]:
        """The options set explicitly (defaults left out), for merging."""
        return {name: getattr(self, name) for name in self.model_fields_set}

    @property
    def refit_method(self) -> str:
        """The router re-fit this run does ("none" or "ridge"): ``auto`` is the
        re-fit with a routing loss (chosen on the validation split,
        docs/objective.md) and none with mse, whose default stays the host's own
        result."""
        if self.router_refit == "auto":
            return "ridge" if self.is_routing_loss else "none"
        return self.router_refit

    @property
    def is_routing_loss(self) -> bool:
        """True when the loss adds a routing term to the host's loss."""
        return self.loss in ROUTING_LOSSES
