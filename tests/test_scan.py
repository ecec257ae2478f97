"""Selective-scan backends: the fast PyTorch scan (and the CUDA kernel) against the reference loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models.scan as scan
from models import resolve_scan_backend, selective_scan, selective_scan_reference, selective_scan_torch

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch, dim, n_state, length, groups=None, seed=0, device="cpu", full=True):
    """Random scan inputs in mamba-ssm's layout, all requiring grad (D, z, delta_bias only when ``full``)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_()

    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    return {
        "u": rnd(batch, dim, length),
        # softplus(delta + bias) lands mostly in (0.1, 2): long and short memories both present
        "delta": rnd(batch, dim, length, scale=0.5),
        "A": (-torch.rand(dim, n_state, generator=g) * 2 - 0.05).to(device).requires_grad_(),
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(dim) if full else None,
        "z": rnd(batch, dim, length) if full else None,
        "delta_bias": rnd(dim, scale=0.5) if full else None,
    }


def run(fn, inputs, softplus=True):
    """Forward, then the gradients of a random projection of the output w.r.t. every tensor input."""
    y = fn(**inputs, delta_softplus=softplus)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(123)).to(y.device)
    names = [k for k in ARG_NAMES if inputs[k] is not None]
    grads = torch.autograd.grad((y * weights).sum(), [inputs[k] for k in names])
    return y, dict(zip(names, grads))


def assert_same(actual, expected, rtol=1e-5, atol=1e-5):
    y_a, g_a = actual
    y_e, g_e = expected
    torch.testing.assert_close(y_a, y_e, rtol=rtol, atol=atol, msg="forward output differs")
    assert g_a.keys() == g_e.keys()
    for name in g_e:
        torch.testing.assert_close(g_a[name], g_e[name], rtol=rtol, atol=atol, msg=f"gradient of {name} differs")


@pytest.mark.parametrize("length", [1, 7, 32, 512])
@pytest.mark.parametrize("groups", [None, 2])
def test_fast_scan_matches_reference(length, groups):
    inputs = make_inputs(batch=2, dim=4, n_state=3, length=length, groups=groups)
    assert_same(run(selective_scan_torch, inputs), run(selective_scan_reference, inputs))


@pytest.mark.parametrize("length", [7, 32])
def test_fast_scan_matches_reference_without_optional_inputs(length):
    inputs = make_inputs(batch=2, dim=3, n_state=4, length=length, full=False)
    with torch.no_grad():
        inputs["delta"].abs_()  # no softplus: Δ must already be positive
    expected = run(selective_scan_reference, inputs, softplus=False)
    assert_same(run(selective_scan_torch, inputs, softplus=False), expected)


def test_fast_scan_blocks_split_batch_and_channels(monkeypatch):
    # A tiny block budget forces many blocks: several per group, per batch item and per channel range.
    inputs = make_inputs(batch=3, dim=6, n_state=2, length=23, groups=2)  # 23 → chunks of 5, padded to 25
    expected = run(selective_scan_reference, inputs)
    for budget in (1, 50, 130, 10_000):
        monkeypatch.setattr(scan, "_BLOCK_ELEMENTS", budget)
        assert_same(run(selective_scan_torch, inputs), expected)


def test_output_keeps_input_dtype_and_runs_float32_inside():
    inputs = make_inputs(batch=1, dim=2, n_state=2, length=5)
    inputs = {k: (v.detach().double() if v is not None else None) for k, v in inputs.items()}
    y = selective_scan_torch(**inputs, delta_softplus=True)
    assert y.dtype == torch.float64
    as_float = {k: v.float() if v is not None else None for k, v in inputs.items()}
    y32 = selective_scan_torch(**as_float, delta_softplus=True)
    assert torch.equal(y, y32.double())


def test_auto_backend_on_cpu_is_torch():
    assert resolve_scan_backend("auto", "cpu") == "torch"
    if not torch.cuda.is_available():
        assert resolve_scan_backend("auto") == "torch"
    inputs = make_inputs(batch=1, dim=3, n_state=2, length=9)
    with torch.no_grad():
        assert torch.equal(selective_scan(**inputs, backend="auto"), selective_scan_torch(**inputs))
        assert torch.equal(selective_scan(**inputs, backend="reference"), selective_scan_reference(**inputs))


def test_backend_errors():
    with pytest.raises(ValueError, match="scan_backend"):
        resolve_scan_backend("fast")
    if not scan.cuda_scan_available():
        with pytest.raises(RuntimeError, match="scan_backend='cuda'"):
            resolve_scan_backend("cuda", "cpu")


@pytest.mark.parametrize(
    "name, shape",
    [("delta", (1, 3, 6)), ("A", (4, 2)), ("B", (1, 2, 4)), ("C", (1, 5, 2, 5)), ("D", (2,)), ("z", (1, 3, 4))],
)
def test_shape_errors_name_the_argument(name, shape):
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(1, 3, 2, 5).items()}
    inputs[name] = torch.randn(shape)
    with pytest.raises(ValueError, match=rf"^{name} must"):
        selective_scan_torch(**inputs)


def test_mamba_ssm_is_not_imported_with_the_package():
    code = "import models, models.scan, sys; assert 'mamba_ssm' not in sys.modules, 'imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


needs_kernel = pytest.mark.skipif(not scan.cuda_scan_available(), reason="needs CUDA and the mamba-ssm kernel")


@pytest.mark.cuda
@needs_kernel
@pytest.mark.parametrize("length", [1, 7, 32, 512])
@pytest.mark.parametrize("groups", [None, 2])
def test_cuda_kernel_matches_reference(length, groups):
    inputs = make_inputs(batch=2, dim=8, n_state=4, length=length, groups=groups, device="cuda")
    # the kernel sums in a different order (and recomputes in backward): float32 agreement, not bitwise
    assert_same(run(scan.selective_scan_cuda, inputs), run(selective_scan_reference, inputs), rtol=1e-3, atol=1e-3)
    assert resolve_scan_backend("auto", "cuda") == "cuda"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_runs_on_cuda_tensors():
    inputs = make_inputs(batch=2, dim=4, n_state=3, length=40, groups=2, device="cuda")
    assert_same(run(selective_scan_torch, inputs), run(selective_scan_reference, inputs))
