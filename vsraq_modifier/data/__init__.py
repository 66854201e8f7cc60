"""Files shipped with the package: the small benchmark MoE and its texts.

The only place their paths are spelled out; ``vsraq report``, ``vsraq demo`` and the
benchmark take their defaults from here.

- ``model/``: the shipped model (transformers checkpoint + tokenizer)
- ``heldout.txt``: held-out text for perplexity and routing metrics
- ``calibration.txt``: calibration text for quantizing
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DATA_DIR",
    "calibration_text_path",
    "heldout_text_path",
    "shipped_model_dir",
]

DATA_DIR = Path(__file__).resolve().parent


def _missing(what: str, path: Path, option: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"the shipped {what} is not in this installation ({path} missing); "
        f"pass {option} explicitly, or reinstall vsraq-modifier from a release that "
        "ships it"
    )


def shipped_model_dir() -> Path:
    """Directory of the shipped MoE checkpoint (config.json, weights, tokenizer)."""
    path = DATA_DIR / "model"
    if not (path / "config.json").is_file():
        raise _missing("model", path, "--reference / --model")
    return path


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
