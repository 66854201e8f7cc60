"""The VSRAQ options: one validated definition shared by the CLI, the Python API and
llm-compressor recipes (names as in docs/objective.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["LossName", "VSRAQConfig", "ROUTING_LOSSES"]

LossName = Literal["mse", "topk_mse", "router_kl", "vsraq"]
#: losses that add a routing term to the host's reconstruction loss
ROUTING_LOSSES: tuple[str, ...] = ("topk_mse", "router_kl", "vsraq")


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
        description="lambda_v: weight of the value term (0 switches it off).",
    )
    structure_weight: float = Field(
        0.25,
        ge=0.0,
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
        1,
        ge=1,
        description="run the look-ahead on every n-th tuning step only (2 halves its "
        "cost: on the shipped model it is most of VSRAQ's extra time; "
        "docs/results.md gives the measured trade-off).",
    )

    @field_validator("value_weight", "structure_weight", "margin")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return v

    @property
    def is_routing_loss(self) -> bool:
        """True when the loss adds a routing term to the host's loss."""
        return self.loss in ROUTING_LOSSES
