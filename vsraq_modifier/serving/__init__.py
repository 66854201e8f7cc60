"""Will vLLM serve this quantized MoE checkpoint? The rules (``rules``, with the vLLM
files they were read from) and a checkpoint reader (``checkpoint``) that applies them
per MoE layer; ``vsraq check-serving`` prints the result."""

from vsraq_modifier.serving.checkpoint import (
    CheckpointError,
    check_checkpoint,
    read_tensor_shapes,
    scheme_from_config_group,
)
from vsraq_modifier.serving.rules import (
    UNQUANTIZED,
    KernelVerdict,
    LayerReport,
    Scheme,
    ServingReport,
    check_moe_layer,
    moe_kernel,
)

__all__ = [
    "UNQUANTIZED",
    "CheckpointError",
    "KernelVerdict",
    "LayerReport",
    "Scheme",
    "ServingReport",
    "check_checkpoint",
    "check_moe_layer",
    "moe_kernel",
    "read_tensor_shapes",
    "scheme_from_config_group",
]
