"""Selective-scan backends: the fast PyTorch scan (and the CUDA kernel) against the reference loop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models.scan as scan
import models.scan_cpu as scan_cpu
from models import resolve_scan_backend, selective_scan, selective_scan_reference, selective_scan_torch
from models.config import EncoderConfig
from models.scan import selective_scan_cpp
from models.ssm import BiMambaMixer

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


def test_auto_backend_on_cpu_is_the_compiled_scan_where_it_builds():
    on_cpu = "cpp" if scan_cpu.cpu_scan_available() else "torch"
    assert resolve_scan_backend("auto", "cpu") == on_cpu
    if not torch.cuda.is_available():
        assert resolve_scan_backend("auto") == on_cpu
    inputs = make_inputs(batch=1, dim=3, n_state=2, length=9)
    fast = selective_scan_cpp if on_cpu == "cpp" else selective_scan_torch
    with torch.no_grad():
        assert torch.equal(selective_scan(**inputs, backend="auto"), fast(**inputs))
        assert torch.equal(selective_scan(**inputs, backend="torch"), selective_scan_torch(**inputs))
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


# ----------------------------------------------------------------------------------------------------
# The compiled CPU scan ("cpp")

needs_cpp = pytest.mark.skipif(not scan_cpu.cpu_scan_available(), reason="the compiled CPU scan did not build here")
REPO = Path(__file__).resolve().parents[1]


def test_compiled_scan_builds_where_a_compiler_is():
    # the other cpp tests skip without the library: this one keeps a broken build from passing unnoticed
    if any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        assert scan_cpu.cpu_scan_available(), "a C++ compiler is installed but the compiled scan did not build"


@needs_cpp
@pytest.mark.parametrize("length", [1, 7, 32, 512, 2048])
@pytest.mark.parametrize("groups", [None, 2])
@pytest.mark.parametrize("n_state", [3, 16])  # the run-time state size and a compiled-in one
def test_compiled_scan_matches_reference(length, groups, n_state):
    inputs = make_inputs(batch=2, dim=4, n_state=n_state, length=length, groups=groups)
    actual, expected = run(selective_scan_cpp, inputs), run(selective_scan_reference, inputs)
    if length <= 512:
        assert_same(actual, expected)
    else:
        # ∂A sums length × batch terms: its elements reach ~1e3 and small ones are differences of large
        # partial sums, so element-wise 1e-5 is below float32's own rounding here (the reference is off from
        # the float64 truth by as much, see below); hold every tensor to 1e-5 of its largest magnitude
        for a, e, name in [(actual[0], expected[0], "y")] + [(actual[1][k], expected[1][k], k) for k in expected[1]]:
            scale = max(1.0, e.abs().max().item())
            assert (a - e).abs().max().item() <= 1e-5 * scale, name


@needs_cpp
def test_compiled_scan_without_optional_inputs_and_in_float64():
    inputs = make_inputs(batch=2, dim=3, n_state=8, length=20, full=False)
    with torch.no_grad():
        inputs["delta"].abs_()  # no softplus: Δ must already be positive
    assert_same(run(selective_scan_cpp, inputs, softplus=False), run(selective_scan_reference, inputs, softplus=False))
    as_double = {k: v.detach().double() if v is not None else None for k, v in make_inputs(1, 2, 2, 5).items()}
    y = selective_scan_cpp(**as_double, delta_softplus=True)
    assert y.dtype == torch.float64  # the input's dtype, computed in float32 inside
    as_float = {k: v.float() if v is not None else None for k, v in as_double.items()}
    assert torch.equal(y, selective_scan_cpp(**as_float, delta_softplus=True).double())


@needs_cpp
@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_scan_splits_work_over_threads_and_group_parts(monkeypatch, threads):
    # several threads and parts of a group, each part with its own dB / dC buffers, must add up to the same gradients
    inputs = make_inputs(batch=3, dim=10, n_state=4, length=33, groups=2)
    expected = run(selective_scan_reference, inputs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for parts in (1, 2, 5):
            monkeypatch.setattr(scan_cpu, "_backward_parts", lambda *_, parts=parts: parts)
            assert_same(run(selective_scan_cpp, inputs), expected)
    finally:
        torch.set_num_threads(before)


def _float64_truth(inputs):
    """The reference recurrence in float64 (its float32 casts bypassed), with gradients."""
    leaves = {k: v.detach().double().requires_grad_() if v is not None else None for k, v in inputs.items()}
    original = torch.Tensor.float
    torch.Tensor.float = lambda t: t if t.dtype == torch.float64 else original(t)
    try:
        return run(selective_scan_reference, leaves)
    finally:
        torch.Tensor.float = original


@needs_cpp
def test_compiled_scan_is_as_accurate_as_the_reference_loop():
    # At L = 2048 the gradient of A sums 2048 × batch terms of size ~1: float32 cannot hold it to 1e-5 in
    # absolute terms, so compare both float32 scans with the float64 truth instead.
    inputs = make_inputs(batch=2, dim=4, n_state=16, length=2048, groups=2)
    truth = _float64_truth(inputs)

    def worst_relative_error(result):
        y, grads = result
        pairs = [(y, truth[0])] + [(grads[k], truth[1][k]) for k in truth[1]]
        return max(((a.double() - e).abs().max() / e.abs().max()).item() for a, e in pairs)

    compiled, loop = worst_relative_error(run(selective_scan_cpp, inputs)), worst_relative_error(
        run(selective_scan_reference, inputs))
    assert compiled <= 2 * loop + 1e-7, (compiled, loop)


@needs_cpp
@pytest.mark.parametrize("length", [7, 64])
def test_compiled_scan_in_the_mixer_matches_reference(length):
    # both scan directions (the backward one on time-reversed input) and grouped B/C, exactly as the mixer calls it
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=16, depth=1, n_mels=32, n_frames=64, unshuffle=1, patch=16, d_state=16)
    mixer = BiMambaMixer(cfg)
    x = torch.randn(2, length, 16, requires_grad=True)
    results = {}
    for backend in ("reference", "cpp"):
        mixer.scan_backend = backend
        mixer.zero_grad(set_to_none=True)
        x.grad = None
        y = mixer(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[backend] = (y.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in mixer.named_parameters()})
    (y_r, gx_r, gp_r), (y_c, gx_c, gp_c) = results["reference"], results["cpp"]
    torch.testing.assert_close(y_c, y_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_c, gx_r, rtol=1e-5, atol=1e-5)
    for name, grad in gp_r.items():
        torch.testing.assert_close(gp_c[name], grad, rtol=1e-5, atol=1e-5, msg=f"gradient of {name} differs")


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=300)


def test_compiled_scan_falls_back_to_torch_with_one_notice(tmp_path):
    # fault injection: a compiler that always fails, and an empty cache so no earlier build is found
    code = (
        "import torch, models.scan as s\n"
        "from tests.test_scan import make_inputs\n"
        "x = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 4, 3, 11, groups=2).items()}\n"
        "assert s.resolve_scan_backend('auto', 'cpu') == 'torch'\n"
        "for _ in range(2):\n"
        "    assert torch.equal(s.selective_scan(**x, backend='auto'), s.selective_scan_torch(**x))\n"
        "try:\n"
        "    s.selective_scan(**x, backend='cpp')\n"
        "except RuntimeError as err:\n"
        "    assert 'compiled CPU selective scan' in str(err)\n"
        "else:\n"
        "    raise AssertionError('cpp ran without its library')\n"
        "print('ok')\n"
    )
    done = _python(code, BOHB_SEARCH_SCAN_CXX="false", TORCH_EXTENSIONS_DIR=str(tmp_path))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    notices = [line for line in done.stderr.splitlines() if "compiled CPU selective scan unavailable" in line]
    assert len(notices) == 1, done.stderr  # one line, once per process
    assert "false failed" in notices[0]
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))


def test_compiled_scan_off_switch():
    done = _python("import models.scan_cpu as c; assert not c.cpu_scan_available(); print('ok')",
                   BOHB_SEARCH_SCAN_CPP="0")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert "unavailable" not in done.stderr  # switched off on purpose: nothing to report


@needs_cpp
def test_concurrent_first_builds_share_one_library(tmp_path):
    # two processes (Ray trial workers starting together) build into the same empty cache at once
    code = "import models.scan_cpu as c; assert c.cpu_scan_available(); print(c.loaded_library_path())"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)}) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    libraries = list(tmp_path.rglob("*.so"))
    assert len(paths) == 1 and len(libraries) == 1 and str(libraries[0]) in paths
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written library left behind


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
