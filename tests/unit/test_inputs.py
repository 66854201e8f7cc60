"""vsraq_modifier/inputs.py: the output-place, device and seed checks, and the
in-memory calibration samples (integer ids [batch, seqlen] of the vocabulary)."""

from __future__ import annotations

import pytest
import torch

from vsraq_modifier.guards import CalibrationDataError
from vsraq_modifier.inputs import (
    DeviceError,
    InputError,
    OutputPlaceError,
    SettingError,
    check_dataset_token_ids,
    check_device,
    check_output_place,
    check_seed,
)
from vsraq_modifier.output import OutputDirError


def test_output_place(tmp_path):
    assert check_output_place(tmp_path / "new" / "deeper") == tmp_path / "new/deeper"
    assert not (tmp_path / "new").exists()  # nothing created
    with pytest.raises(InputError, match="--out is an empty path"):
        check_output_place("", "--out")  # pathlib would make it the cwd
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPlaceError, match="is a file"):
        check_output_place(tmp_path / "f")
    with pytest.raises(OutputPlaceError, match="no directory can be made there"):
        check_output_place(tmp_path / "f" / "sub")
    with pytest.raises(OutputPlaceError, match="not writable"):
        check_output_place("/sys/vsraq-test")  # nobody can create files there
    # one class for the commands, and the output module's class for the API
    assert issubclass(OutputPlaceError, InputError)
    assert issubclass(OutputPlaceError, OutputDirError)


def test_devices():
    assert check_device("cpu") == "cpu"
    with pytest.raises(DeviceError, match="not a torch device"):
        check_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="this machine has no cuda"):
            check_device("cuda:0")
    with pytest.raises(DeviceError):
        check_device(f"cuda:{torch.cuda.device_count() + 3}")


def test_token_ids_of_the_vocabulary():
    check_dataset_token_ids([torch.tensor([[0, 5, 9]])], 10)
    check_dataset_token_ids("NeelNanda/pile-10k", 10)  # a name: the host's to read
    with pytest.raises(CalibrationDataError, match="sample 1 holds token id 10, "):
        check_dataset_token_ids(
            [torch.tensor([[1]]), {"input_ids": torch.tensor([[10]])}], 10
        )
    with pytest.raises(InputError, match="token id -3"):
        check_dataset_token_ids([torch.tensor([[-3, 2]])], 10)
    with pytest.raises(InputError, match=r"sample 0 is a float32 tensor"):
        check_dataset_token_ids([torch.rand(1, 4)], 10)
    with pytest.raises(
        InputError, match=r"sample 0 has shape \(4,\); pass .*ids\[None\]"
    ):
        check_dataset_token_ids([torch.tensor([1, 2, 3, 4])], 10)


def test_seed_range():
    check_seed(0)
    check_seed(2**32 - 1)
    for bad in (-1, 2**32):
        with pytest.raises(SettingError, match=f"--seed {bad}: use a seed in 0.."):
            check_seed(bad)


def test_cli_checks_only_with_a_routing_loss(tmp_path):
    """Without --loss (or --algorithm vsraq) auto-round runs unchanged: nothing is
    checked, even what the checks would refuse."""
    from argparse import Namespace

    from vsraq_modifier.entry_checks import check_cli_inputs

    bad = dict(model=str(tmp_path / "nowhere"), model_name=None, seed=-1, seqlen=0)
    check_cli_inputs(Namespace(loss=None, algorithm=None, **bad))
    for routed in (
        dict(loss="mse", algorithm=None),
        dict(loss=None, algorithm="vsraq"),
    ):
        with pytest.raises(SettingError):
            check_cli_inputs(Namespace(**routed, **bad))
