"""Files shipped with the package: the small benchmark MoE and its texts.

The only place their paths are spelled out; ``vsraq report``, ``vsraq demo`` and the
benchmark take their defaults from here.

- ``model/``: the first shipped model, Qwen3-MoE (transformers checkpoint +
  tokenizer); ``model_deepseek_v3/``: the second, DeepSeek-V3 (sigmoid, grouped
  routers with a selection bias, a shared expert, a dense first layer); both
  trained by scripts/train_moe.py on the same corpus (docs/model.md)
- ``heldout.txt``: held-out text for perplexity and routing metrics
- ``calibration.txt``: calibration text for quantizing
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DATA_DIR",
    "SHIPPED_MODELS",
    "calibration_text_path",
    "heldout_text_path",
    "resolve_model",
    "shipped_model_dir",
]

DATA_DIR = Path(__file__).resolve().parent

#: shipped model name -> its folder under DATA_DIR (the first is the default)
SHIPPED_MODELS: dict[str, str] = {
    "qwen3_moe": "model",
    "deepseek_v3": "model_deepseek_v3",
}


def _missing(what: str, path: Path, option: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"the shipped {what} is not in this installation ({path} missing); "
        f"pass {option} explicitly, or reinstall vsraq-modifier from a release that "
        "ships it"
    )


def shipped_model_dir(name: str = "qwen3_moe") -> Path:
    """Directory of a shipped MoE checkpoint (config.json, weights, tokenizer):
    the first (Qwen3-MoE) by default, the other by its name in
    :data:`SHIPPED_MODELS`."""
    if name not in SHIPPED_MODELS:
        raise ValueError(
            f"no shipped model named {name!r}; the shipped models are "
            + ", ".join(SHIPPED_MODELS)
        )
    path = DATA_DIR / SHIPPED_MODELS[name]
    if not (path / "config.json").is_file():
        raise _missing(f"model {name!r}", path, "--reference / --model")
    return path


def resolve_model(model: str | None) -> str:
    """A model argument as a folder: None is the first shipped model, a shipped
    model's name is its folder, anything else is returned as given."""
    if model is None:
        return str(shipped_model_dir())
    if model in SHIPPED_MODELS and not Path(model).exists():
        return str(shipped_model_dir(model))
    return model


def heldout_text_path() -> Path:
    """The shipped held-out text (UTF-8), never used for calibration or training."""
    path = DATA_DIR / "heldout.txt"
    if not path.is_file():
        raise _missing("held-out text", path, "--text")
    return path


def calibration_text_path() -> Path:
    """The shipped calibration text (UTF-8)."""
    path = DATA_DIR / "calibration.txt"
    if not path.is_file():
        raise _missing("calibration text", path, "--calibration-text / --text")
    return path
