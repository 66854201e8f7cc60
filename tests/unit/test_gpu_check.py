"""The CPU-side parts of scripts/gpu_check.py: the wheel list, argument handling,
--dry-run, the refusal without CUDA, and the verdict of its device probe."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402
import gpu_support  # noqa: E402

HOSTS = ("auto-round", "llmcompressor", "compressed-tensors")


def test_wheel_list_pins_every_host_at_the_tested_version():
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    pins = gpu_support.wheel_requirements()
    for host in (*HOSTS, "datasets"):
        assert host in pins, host
    for host in HOSTS:  # the hosts: exactly the versions these tests ran
        assert version(host) == pins[host], host
    # what the hosts require from outside the GPU image is listed, and the rest
    # of the pins (a release on the index may move this environment past them:
    # accelerate 1.15 -> 1.16 did) are versions every host accepts
    in_image = {"torch", "transformers", "numpy", "tqdm", "pyyaml"}
    in_image.add("pillow")  # imported only for vision models
    provided = in_image | {"packaging", "filelock", "fsspec", "huggingface-hub"}
    for host in (*HOSTS, "datasets"):
        for req in map(Requirement, requires(host) or []):
            name = gpu_support._norm(req.name)
            if req.marker is not None:
                continue
            if name not in provided:
                assert name in pins, f"{host} needs {name}"
            if name in pins:
                assert req.specifier.contains(pins[name], prereleases=True), (
                    f"{name}=={pins[name]} does not satisfy {host}'s {req}"
                )


def test_wheel_list_refuses_a_line_that_is_not_a_pin(tmp_path):
    bad = tmp_path / "w.txt"
    bad.write_text("auto-round>=0.15\n")
    with pytest.raises(gpu_support.CheckError, match="is not NAME==VERSION"):
        gpu_support.wheel_requirements(bad)


def test_download_script_asks_pip_for_cp312_manylinux_binaries():
    script = (ROOT / "scripts" / "download_gpu_wheels.sh").read_text()
    for flag in (
        "--only-binary=:all:",
        "--python-version 3.12",
        "--no-deps",
        "manylinux2014_x86_64",
        "--abi cp312",
        "gpu-wheels.txt",
    ):
        assert flag in script, flag
    syntax = subprocess.run(
        ["bash", "-n", str(ROOT / "scripts/download_gpu_wheels.sh")]
    )
    assert syntax.returncode == 0


def fake_wheels(folder: Path, skip: str | None = None) -> None:
    """Files named as pip names the wheels (the dry run reads names only)."""
    folder.mkdir()
    for name, pinned in gpu_support.wheel_requirements().items():
        if name != skip:
            (folder / f"{name.replace('-', '_')}-{pinned}-py3-none-any.whl").touch()


def test_dry_run_counts_the_wheels_and_names_the_missing(tmp_path, capsys):
    pins = gpu_support.wheel_requirements()
    fake_wheels(tmp_path / "whl", skip="pyarrow")
    out = tmp_path / "out"
    argv = ["--out", str(out), "--wheels", str(tmp_path / "whl"), "--dry-run"]
    assert gpu_check.main([*argv, "--iters", "7"]) == 0
    text = capsys.readouterr().out
    assert f"{len(pins) - 1} of {len(pins)} wheels" in text
    assert f"missing: pyarrow=={pins['pyarrow']}" in text
    assert "iters 7, nsamples 64" in text
    assert "of those, this Python lacks: none" in text  # pyarrow is installed here
    assert gpu_support.not_installed(["pyarrow==1", "no-such-dist-xyz==1"]) == [
        "no-such-dist-xyz==1"
    ]
    assert not out.exists()  # a dry run writes nothing


def test_bad_arguments_exit_2(tmp_path, capsys):
    for argv in (
        ["--iters", "0", "--out", str(tmp_path)],
        ["--dry-run"],
        ["--out", str(tmp_path), "--nsamples", "x"],
    ):
        with pytest.raises(SystemExit) as e:
            gpu_check.parse_args(argv)
        assert e.value.code == 2
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "f").touch()
    assert gpu_check.main(["--out", str(taken), "--dry-run"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the check")
def test_refuses_to_run_without_cuda_in_one_line(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_check.py"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("gpu_check: error: no CUDA device")
    assert not (tmp_path / "out").exists()


def test_probe_hooks_the_session_code_of_this_tree(monkeypatch):
    from vsraq_modifier.refit import RefitOptions, fit, refit_router
    from vsraq_modifier.routing import RouterSpec
    from vsraq_modifier.session import block

    for cls, name in [
        (block.BlockSession, "_on_record"),
        (block.BlockSession, "start"),
        (block.ReferenceStore, "add"),
        (fit, "fit64"),
    ]:
        monkeypatch.setattr(cls, name, getattr(cls, name))  # restored afterwards
    probe = gpu_support.Probe()
    probe.install()
    probe.run = "vsraq"
    store = block.ReferenceStore()
    record = block.TapRecord(shape=(1, 3), kwargs={}, logits={0: torch.zeros(3, 4)})
    store.add(record)
    assert store.samples == 1  # the real method ran
    x, w = torch.randn(32, 6), torch.randn(4, 6)
    res = refit_router(
        w, None, RouterSpec(4, 2), x, x @ w.T, None, RefitOptions(method="ridge")
    )
    assert res.fit_tokens == 24  # the real fit ran
    assert probe.seen == {
        "vsraq": {
            "cached reference logits": {"cpu": 1},
            "router re-fit solves": {"cpu": 1},
        }
    }


def test_probe_verdict():
    probe = gpu_support.Probe()
    good = {
        "cached reference logits": {"cuda": 12},
        "look-ahead weights at tuning start": {"cuda": 40},
        "router logits, reference, own": {"cuda": 12},
        "router logits, tune, look-ahead": {"cuda": 30},
        "router re-fit solves": {"cuda": 20},
    }
    probe.seen = {"vsraq": dict(good), "oneshot-vsraq": dict(good)}
    assert probe.failures("cuda:0") == []
    probe.seen["vsraq"]["router logits, tune, look-ahead"] = {"cuda": 29, "cpu": 1}
    del probe.seen["oneshot-vsraq"]["cached reference logits"]
    failures = probe.failures("cuda")
    assert len(failures) == 2
    assert (
        "vsraq: router logits, tune, look-ahead: {'cuda': 29, 'cpu': 1}" in failures[0]
    )
    assert failures[1].startswith("oneshot-vsraq: cached reference logits: none")
    probe.seen = {"vsraq": {"router logits, tune, own": {"cuda": 3}}}
    assert "vsraq: no look-ahead router logits recorded" in probe.failures("cuda")


def make_wheel(folder: Path, tag: str = "py3-none-any") -> Path:
    """A minimal real wheel of package ``vsraq_probe_pkg`` (pip installs it)."""
    import zipfile

    wheel = folder / f"vsraq_probe_pkg-1.0-{tag}.whl"
    info = "vsraq_probe_pkg-1.0.dist-info"
    files = {
        "vsraq_probe_pkg/__init__.py": "VALUE = 42\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: vsraq-probe-pkg\n"
        "Version: 1.0\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        f"Tag: {tag}\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(name, text)
    return wheel


def test_install_puts_the_wheels_first_on_sys_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    target = tmp_path / "site"
    gpu_support.install([make_wheel(tmp_path)], target)
    assert sys.path[0] == str(target)
    import vsraq_probe_pkg

    assert vsraq_probe_pkg.VALUE == 42
    assert Path(vsraq_probe_pkg.__file__).is_relative_to(target)
    sys.modules.pop("vsraq_probe_pkg")
    with pytest.raises(gpu_support.CheckError, match="not a supported wheel"):
        gpu_support.install([make_wheel(tmp_path, "py2-none-any")], tmp_path / "x")
