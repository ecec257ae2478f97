"""GPU checks of the selective scan and the encoder, run by ``bench/gpu_check.sh`` on a CUDA machine.

    python -m bench.gpu_check --out DIR [--quick]

(a) mamba-ssm's kernel (``selective_scan(..., backend="cuda")``) against ``selective_scan_reference``: forward
    output and the gradients of every input at a few sizes, max abs error and max error relative to the
    largest reference value;
(b) time of the CUDA kernel against the PyTorch chunked scan (``backend="torch"``) on CUDA tensors, forward and
    forward + backward, CUDA events, interleaved repetitions, medians;
(c) per-clip inference time of the SSM encoder (``encoder_preset("tiny")``: D 192, depth 24, r 4) on 10 s
    clips, fp32 against bf16 autocast, batch 1 and 32, for each scan backend that runs here.

Each part is independent: one that cannot run (no kernel, out of memory, ...) is reported as skipped with its
reason and the others still run. Markdown is appended to ``DIR/gpu_check.md`` after every part, so a run cut
short keeps what it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


class Report:
    def __init__(self, path: Path):
        self.path = path

    def add(self, text: str) -> None:
        with open(self.path, "a") as fh:
            fh.write(text.rstrip() + "\n\n")
        print(text.rstrip() + "\n", flush=True)


def make_inputs(batch, dim, n_state, length, groups, device, seed=0, requires_grad=True, z=True):
    """Scan inputs in mamba-ssm's layout (as tests/test_scan.py): u, Δ (B, D, L), A (D, N), B/C (B, G, N, L)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device).requires_grad_(requires_grad)

    return {
        "u": rnd(batch, dim, length),
        "delta": rnd(batch, dim, length, scale=0.5),
        "A": (-torch.rand(dim, n_state, generator=g) * 2 - 0.05).to(device).requires_grad_(requires_grad),
        "B": rnd(batch, groups, n_state, length),
        "C": rnd(batch, groups, n_state, length),
        "D": rnd(dim),
        "z": rnd(batch, dim, length) if z else None,
        "delta_bias": rnd(dim, scale=0.5),
    }


def fwd_bwd(backend, inputs):
    from models import selective_scan, selective_scan_reference

    fn = selective_scan_reference if backend == "reference" else (
        lambda **kw: selective_scan(**kw, backend=backend))
    y = fn(**inputs, delta_softplus=True)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(123)).to(y.device)
    names = [k for k in ARG_NAMES if inputs[k] is not None]
    grads = torch.autograd.grad((y * w).sum(), [inputs[k] for k in names])
    return y.detach(), dict(zip(names, (g.detach() for g in grads)))


def errors(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.double() - b.double()).abs().max().item()
    return d, d / max(b.double().abs().max().item(), 1e-30)


def part_a(rep: Report, quick: bool) -> None:
    sizes = [(2, 64, 16, 64, 1), (2, 256, 16, 512, 2), (4, 768, 16, 1024, 2)]
    if quick:
        sizes = sizes[:2]
    lines = ["### (a) mamba-ssm kernel vs `selective_scan_reference` (float32, CUDA)", "",
             "Inputs as in tests/test_scan.py (D, z, delta_bias, softplus on; B/C grouped); gradients of a random "
             "projection of the output. *rel* = max abs error / max |reference|.", "",
             "| batch | channels | d_state | L | groups | y abs / rel | worst grad (name) abs / rel | all grads rel ≤ 1e-3 |",
             "|---:|---:|---:|---:|---:|---|---|---|"]
    for batch, dim, n_state, length, groups in sizes:
        inputs = make_inputs(batch, dim, n_state, length, groups, "cuda")
        y_k, g_k = fwd_bwd("cuda", inputs)
        y_r, g_r = fwd_bwd("reference", inputs)
        ya, yr = errors(y_k, y_r)
        gerr = {k: errors(g_k[k], g_r[k]) for k in g_r}
        worst = max(gerr, key=lambda k: gerr[k][1])
        ok = all(r <= 1e-3 for _, r in gerr.values()) and yr <= 1e-3
        lines.append(f"| {batch} | {dim} | {n_state} | {length} | {groups} | {ya:.1e} / {yr:.1e} | "
                     f"{gerr[worst][0]:.1e} / {gerr[worst][1]:.1e} ({worst}) | {'yes' if ok else '**no**'} |")
        del inputs, y_k, g_k, y_r, g_r
        torch.cuda.empty_cache()
    rep.add("\n".join(lines))


def cuda_time(fn, reps: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e))
    return out


def interleaved_cuda(cands: dict, reps: int) -> dict[str, float]:
    for fn in cands.values():
        cuda_time(fn, 0, warmup=3)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(reps):
        for k, fn in cands.items():
            times[k] += cuda_time(fn, 1, warmup=0)
    return {k: statistics.median(v) for k, v in times.items()}


def part_b(rep: Report, quick: bool) -> None:
    from models import selective_scan

    reps = 5 if quick else 15
    # one SSM layer of the D = 192 model: both directions -> 2 x expand 2 x 192 = 768 channels, 2 groups
    cases = [(32, 768, 32), (32, 768, 512), (8, 768, 3072)]
    lines = ["### (b) CUDA kernel vs PyTorch chunked scan on CUDA tensors (float32)", "",
             f"One SSM layer of the D = 192 model: 768 channels (2 directions × expand 2 × 192), d_state 16, 2 groups, "
             f"D, z, delta_bias, softplus. L = 32: 10 s at r = 4; 512: 10 s at r = 1; 3072: 60 s at r = 1. Median "
             f"of {reps} interleaved repetitions (CUDA events) after 3 warm-ups.", "",
             "| batch | L | torch fwd ms | kernel fwd ms | speed-up | torch fwd+bwd ms | kernel fwd+bwd ms | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for batch, dim, length in cases:
        x = make_inputs(batch, dim, 16, length, 2, "cuda")
        xn = {k: (None if v is None else v.detach()) for k, v in x.items()}

        def fwd(backend):
            def run():
                with torch.no_grad():
                    selective_scan(**xn, delta_softplus=True, backend=backend)
            return run

        def both(backend):
            def run():
                y = selective_scan(**x, delta_softplus=True, backend=backend)
                torch.autograd.grad(y.sum(), [x[k] for k in ARG_NAMES if x[k] is not None])
            return run

        t = interleaved_cuda({"tf": fwd("torch"), "kf": fwd("cuda"), "tb": both("torch"), "kb": both("cuda")}, reps)
        lines.append(f"| {batch} | {length} | {t['tf']:.3f} | {t['kf']:.3f} | **{t['tf'] / t['kf']:.1f}×** | "
                     f"{t['tb']:.3f} | {t['kb']:.3f} | **{t['tb'] / t['kb']:.1f}×** |")
        del x, xn
        torch.cuda.empty_cache()
    rep.add("\n".join(lines))


def part_c(rep: Report, quick: bool, kernel: bool) -> None:
    from models import build_encoder, encoder_preset

    reps = 5 if quick else 15
    cfg = encoder_preset("tiny")
    enc = build_encoder(cfg).cuda().eval()
    n_params = sum(p.numel() for p in enc.parameters()) / 1e6
    backends = (["cuda"] if kernel else []) + ["torch"]
    lines = ["### (c) SSM encoder inference per clip: bf16 autocast vs fp32", "",
             f"`encoder_preset('tiny')`: D {cfg.dim}, depth {cfg.depth}, r {cfg.unshuffle}, p {cfg.patch}, "
             f"{n_params:.2f} M parameters; input (batch, 128, 1024) = 10 s log-mels; `torch.inference_mode()`; "
             f"ms per clip = batch time / batch; median of {reps} interleaved repetitions (CUDA events) after 3 "
             "warm-ups. *Δ pooled* = max |bf16 − fp32| of the pooled embedding / max |fp32|.", "",
             "| scan | batch | fp32 ms/clip | bf16 ms/clip | bf16 speed-up | Δ pooled (rel) |",
             "|---|---:|---:|---:|---:|---:|"]
    g = torch.Generator().manual_seed(0)
    for backend in backends:
        enc.set_scan_backend(backend)
        for batch in (1, 32):
            x = (torch.randn(batch, 128, 1024, generator=g) * 10 - 40).cuda()

            def fp32():
                with torch.inference_mode():
                    return enc(x).pooled

            def bf16():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    return enc(x).pooled

            diff = errors(bf16().float(), fp32().float())[1]
            t = interleaved_cuda({"fp32": fp32, "bf16": bf16}, reps)
            lines.append(f"| {backend} | {batch} | {t['fp32'] / batch:.3f} | {t['bf16'] / batch:.3f} | "
                         f"**{t['fp32'] / t['bf16']:.2f}×** | {diff:.1e} |")
    rep.add("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder; gpu_check.md there is appended to")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    args = ap.parse_args(argv)
    rep = Report(Path(args.out) / "gpu_check.md")
    if not torch.cuda.is_available():
        rep.add("**No CUDA device visible to torch: parts (a)-(c) skipped.**")
        return 1
    from models import cuda_scan_available

    kernel = cuda_scan_available()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are real fp32
    torch.backends.cudnn.allow_tf32 = False
    try:
        import mamba_ssm

        mver = mamba_ssm.__version__
    except Exception as exc:  # noqa: BLE001
        mver = f"not importable ({type(exc).__name__}: {exc})"
    rep.add(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__} (CUDA {torch.version.cuda}); "
            f"mamba-ssm {mver}; kernel usable: {'yes' if kernel else '**no**'}; TF32 off.")
    failures = 0
    parts = [("(a) kernel accuracy", lambda: part_a(rep, args.quick), kernel),
             ("(b) kernel vs PyTorch scan timing", lambda: part_b(rep, args.quick), kernel),
             ("(c) encoder inference bf16 vs fp32", lambda: part_c(rep, args.quick, kernel), True)]
    for name, fn, possible in parts:
        if not possible:
            rep.add(f"### {name}\n\nSKIPPED: the mamba-ssm kernel is not usable here (see the install step's log).")
            continue
        t0 = time.perf_counter()
        try:
            fn()
            print(f"[gpu_check] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - report and go on with the other parts
            failures += 1
            tb = traceback.format_exc(limit=3).strip().splitlines()
            rep.add(f"### {name}\n\nFAILED after {time.perf_counter() - t0:.1f} s: `{type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}`\n\n```\n" + "\n".join(tb[-6:]) + "\n```")
        torch.cuda.empty_cache()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
