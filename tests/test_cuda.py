"""CUDA variants: the same lockstep with the twin on the GPU (TF32 off). Skipped without a GPU."""
import pytest
import torch

from torch_ref.lockstep.run import lockstep

from conftest import make_desc

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("sizes,activation", [([2, 2, 2], "sigmoid"), ([8, 64, 64, 4], ["tanh", "relu", "identity"])])
def test_lockstep_on_cuda(sizes, activation, dtype):
    desc = make_desc(sizes, activation, steps=50, dtype=dtype, batch_size=8, n=32)
    desc["run"]["device"] = "cuda"
    result = lockstep(desc)
    assert result.ok, str(result.first_mismatch)
    assert result.device == "cuda"
    assert torch.backends.cuda.matmul.allow_tf32 is False


def test_worked_example_on_cuda(worked):
    worked["run"].update(device="cuda", steps=2000)
    result = lockstep(worked)
    assert result.ok, str(result.first_mismatch)
    assert max(s["max_rel_err"] for s in result.stats.values()) <= 1e-12


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_plugin_and_finite_differences_against_a_twin_on_cuda(worked, dtype):
    """--impl and --fd with the twin on the GPU: the plug-in and the differences stay in numpy."""
    from pathlib import Path

    from torch_ref import check
    port = Path(__file__).resolve().parent.parent / "scripts" / "seed_port.py"
    worked["run"].update(device="cuda")
    result = check(worked, f"{port}:build", steps=200, dtype=dtype, fd_steps=2)
    assert result.ok and result.device == "cuda", result.summary()
    assert result.fd.ok and result.not_reported == []
