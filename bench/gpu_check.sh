#!/usr/bin/env bash
# GPU check of the project on a CUDA machine (written for a lent NVIDIA H200), in one run of about 8 minutes:
#   1. a virtual environment ($GPU_VENV, default /tmp/bohb-search-gpu-venv) with the project: `pip install -e ".[dev]"`, then the `cuda` extra
#      (mamba-ssm, causal-conv1d) with --no-build-isolation against the torch already installed;
#   2. python -m bench.gpu_check: (a) mamba-ssm kernel vs the reference scan, forward and gradients, (b) kernel vs
#      the PyTorch chunked scan on CUDA tensors, (c) SSM encoder (tiny preset, 10 s, r 4) bf16 vs fp32 at batch
#      1 and 32;
#   3. pytest tests/test_scan.py -m cuda;
#   4. a 2-trial BOHB search with --gpus-per-trial 0.5 on tiny synthetic data (python -m bohb_search search).
# Figures go to $OUT/gpu_check.md (printed at the end), the full log to $OUT/gpu_check.log, step times to the
# table at the end of gpu_check.md. A step that fails is reported and the later steps still run; the exit status
# is non-zero if any step failed.
#
# How to run (from the repository root of a fresh checkout; needs nvidia-smi, nvcc and Python >= 3.11):
#   bash bench/gpu_check.sh                      # OUT defaults to results/gpu_check/
#   OUT=/tmp/out bash bench/gpu_check.sh
# Through this workplace's device tool (the device machine reaches no package registry, and its python3 is
# 3.12 with torch 2.11.0+cu130 preinstalled): the script then installs offline from a wheel folder, by default
# .whl/ (carry it): the sdists of mamba-ssm 2.3.2 and causal-conv1d, and wheels of what the image lacks
# (soundfile, ray[tune], mlflow, hpbandster, ConfigSpace and their own needs). Whatever is missing there makes
# only the steps that need it SKIPPED, e.g. without ray and mlflow the search step:
#   device run: command "bash bench/gpu_check.sh", carry [".whl"], timeout_s 560
# (.whl/ is not git-ignored by the project; `echo /.whl/ >> .git/info/exclude` keeps it out of git status.)
# Settings (environment): GPU_VENV, PYTHON (interpreter for the venv, default python3.11, else python3), WHEELS (offline
# wheel folder, default .whl), TOTAL_BUDGET_S (default 470: later steps are skipped when it is spent),
# BUILD_TIMEOUT_S (default 300, building the kernels), QUICK=1 (fewer sizes and repetitions),
# TORCH_CUDA_ARCH_LIST (default 9.0, Hopper only, to keep the kernel build short).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$PWD"
OUT="${OUT:-$REPO/results/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
MD="$OUT/gpu_check.md"
LOG="$OUT/gpu_check.log"
VENV="${GPU_VENV:-${TMPDIR:-/tmp}/bohb-search-gpu-venv}"   # outside the checkout: nothing to git-ignore
WHEELS="${WHEELS:-$REPO/.whl}"
TOTAL_BUDGET_S="${TOTAL_BUDGET_S:-470}"
BUILD_TIMEOUT_S="${BUILD_TIMEOUT_S:-300}"
QUICK="${QUICK:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 PIP_DISABLE_PIP_VERSION_CHECK=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE   # build here; never fetch prebuilt wheels
MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export MAX_JOBS

: >"$MD"
: >"$LOG"
STEPS=()
FAILED=0
START=$SECONDS

say() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
left() { echo $((TOTAL_BUDGET_S - (SECONDS - START))); }
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# run_step NAME MAX_SECONDS MIN_SECONDS CMD...: runs CMD (output to the log) under `timeout`, capped by what is
# left of the total budget; skipped when less than MIN_SECONDS are left. Records status and seconds.
run_step() {
    local name="$1" cap="$2" need="$3"
    shift 3
    local budget
    budget=$(left)
    if [ "$budget" -lt "$need" ]; then
        say "SKIP $name: ${budget}s left of the ${TOTAL_BUDGET_S}s budget, needs ${need}s"
        STEPS+=("| $name | skipped (time budget) | 0 |")
        return 0
    fi
    [ "$cap" -gt "$budget" ] && cap=$budget
    say "START $name (limit ${cap}s)"
    local t0=$SECONDS rc=0
    if [ "$(type -t "$1")" = function ]; then
        # a shell function cannot be exec'd by timeout: run it in a child bash (functions and settings exported)
        timeout --kill-after=10 "$cap" bash -c 'set -euo pipefail; "$@"' _ "$@" >>"$LOG" 2>&1 || rc=$?
    else
        timeout --kill-after=10 "$cap" "$@" >>"$LOG" 2>&1 || rc=$?
    fi
    local dt=$((SECONDS - t0)) status="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status="**timed out** after ${cap}s"
    elif [ "$rc" -ne 0 ]; then
        status="**failed** (exit $rc)"
    fi
    [ "$status" = "ok" ] || FAILED=1
    say "END $name: $status in ${dt}s"
    STEPS+=("| $name | $status | $dt |")
    return 0
}

# ------------------------------------------------------------------ environment
command -v nvidia-smi >/dev/null 2>&1 || { say "nvidia-smi not found: this script needs a CUDA machine"; exit 2; }
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH="/usr/local/cuda/bin:$PATH"
fi
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
    CUDA_HOME="$(dirname "$(dirname "$(command -v nvcc)")")"
    export CUDA_HOME
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    PY=python3.11
    command -v "$PY" >/dev/null 2>&1 || PY=python3
fi
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { say "$PY is older than Python 3.11"; exit 2; }
ONLINE=0
if "$PY" -c 'import urllib.request as u; u.urlopen("https://pypi.org/simple/pip/", timeout=5)' >/dev/null 2>&1; then
    ONLINE=1
fi
{
    echo "# GPU check — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "\`bash bench/gpu_check.sh\`; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)" \
         "(driver); $(nproc) CPU cores; nvcc: $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' || echo 'not found');" \
         "python: $("$PY" -V 2>&1); package index: $([ "$ONLINE" = 1 ] && echo 'PyPI reachable' || echo "offline, wheels from ${WHEELS#"$REPO"/}");" \
         "kernels built for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST."
    echo
} >>"$MD"
say "python $PY, online=$ONLINE, out=$OUT"

# ------------------------------------------------------------------ 1. install
# --system-site-packages: a CUDA torch that the machine already has (torch==2.11.0 satisfies the pin) is reused
# rather than downloaded again (about 3 GB).
run_step "venv" 60 5 "$PY" -m venv --system-site-packages "$VENV"
VPY="$VENV/bin/python"
[ -x "$VPY" ] || { say "no venv python at $VPY"; cat "$MD"; exit 1; }
# When $PY itself lives in a venv (this workplace's image: /opt/torch/.venv/bin/python3 holds torch),
# --system-site-packages only reaches the base interpreter's packages; a .pth file adds that venv's too.
parent_site=$("$PY" -c 'import sys, site; print(":".join(site.getsitepackages()) if sys.prefix != sys.base_prefix else "")')
if [ -n "$parent_site" ]; then
    own_site=$("$VPY" -c 'import site; print(site.getsitepackages()[0])')
    tr ':' '\n' <<<"$parent_site" >"$own_site/_parent_venv.pth"
    say "added the site-packages of $PY's venv to $VENV ($parent_site)"
fi
export VPY WHEELS WORK REPO
# the `cuda` extra of pyproject.toml, read rather than repeated here
CUDA_REQS=$("$VPY" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["cuda"]))')
say "cuda extra: $CUDA_REQS"
if [ "$ONLINE" = 1 ]; then
    run_step 'pip install -e ".[dev]"' 240 30 "$VPY" -m pip install --quiet -e ".[dev]"
    # --no-build-isolation builds against the torch installed above; its build tools must be there first
    run_step "build tools (ninja, packaging, wheel, setuptools)" 60 10 \
        "$VPY" -m pip install --quiet ninja packaging wheel "setuptools>=68"
    # shellcheck disable=SC2086  # CUDA_REQS is a list of requirement strings without spaces
    run_step "pip install --no-build-isolation cuda extra (build kernels)" "$BUILD_TIMEOUT_S" 60 \
        "$VPY" -m pip install --no-build-isolation $CUDA_REQS
else
    if [ -d "$WHEELS" ]; then
        # everything the folder offers, one by one, so that one package that does not fit leaves the others
        offline_wheels() {
            local f rc=0
            for f in "$WHEELS"/*.whl; do
                [ -e "$f" ] || continue
                "$VPY" -m pip install --quiet --no-index --no-deps --find-links "$WHEELS" "$f" || { echo "could not install $f"; rc=1; }
            done
            return $rc
        }
        export -f offline_wheels
        run_step "offline wheels from ${WHEELS#"$REPO"/}" 120 10 offline_wheels
        offline_kernels() {
            local rc=0 pkg
            for pkg in $CUDA_REQS; do
                "$VPY" -m pip install --no-index --no-deps --no-build-isolation --find-links "$WHEELS" "$pkg" || rc=1
            done
            return $rc
        }
        export -f offline_kernels
        export CUDA_REQS
        run_step "offline build of the cuda extra (sdists)" "$BUILD_TIMEOUT_S" 60 offline_kernels
    else
        say "offline and no wheel folder $WHEELS: using only what the machine has"
    fi
    # the project itself: no dependencies fetched (none can be), no build isolation (setuptools from the system)
    run_step "pip install --no-deps -e . (offline)" 60 5 "$VPY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
fi
missing=$("$VPY" - <<'EOF'
import importlib.util as u
names = ["torch", "torchaudio", "soundfile", "ray", "mlflow", "hpbandster", "ConfigSpace", "mamba_ssm", "causal_conv1d", "pytest"]
print(" ".join(n for n in names if u.find_spec(n) is None))
EOF
)
say "python modules missing: ${missing:-none}"
{ echo "Python modules missing after the install: ${missing:-none}."; echo; } >>"$MD"

# ------------------------------------------------------------------ 2. kernel and encoder figures
quick_flag=()
[ "$QUICK" = 1 ] && quick_flag=(--quick)
run_step "python -m bench.gpu_check (a)-(c)" 180 30 "$VPY" -m bench.gpu_check --out "$OUT" "${quick_flag[@]}"

# ------------------------------------------------------------------ 3. CUDA tests
pytest_cuda() {
    local rc=0
    "$VPY" -m pytest tests/test_scan.py -m cuda -q -rA -p no:cacheprovider 2>&1 | tee "$WORK/pytest.txt" || rc=$?
    # exit 5 = nothing collected/selected
    return $rc
}
export -f pytest_cuda
run_step "pytest tests/test_scan.py -m cuda" 120 20 pytest_cuda
{
    echo "### (d) \`pytest tests/test_scan.py -m cuda\`"
    echo
    if [ -s "$WORK/pytest.txt" ]; then
        echo '```'
        grep -E '^(PASSED|FAILED|SKIPPED|ERROR)|passed|failed|skipped|error' "$WORK/pytest.txt" | tail -n 15
        echo '```'
    else
        echo "not run (see the step table)"
    fi
    echo
} >>"$MD"

# ------------------------------------------------------------------ 4. a search with fractional GPUs
search_gpu() {
    local data="$WORK/data" t0
    "$VPY" -m bohb_search data synth --out "$data" --machines fan valve --train-source 20 --train-target 2 \
        --test-per-cell 6 --seconds 2 --quiet
    "$VPY" -m bohb_search pretrain --data "$data" --out "$WORK/pre" --epochs 1 --batch-size 16 --dim 32 --depth 2 \
        --seconds 2 --cache-dir "$WORK/cache" --quiet
    t0=$SECONDS
    "$VPY" -m bohb_search search --data "$data" --machine fan --name gpu-frac --pretrained "$WORK/pre/encoder.pt" \
        --num-samples 2 --max-epochs 3 --eta 3 --batch-size 16 --cpus-per-trial 1 --gpus-per-trial 0.5 \
        --cache-dir "$WORK/cache" --storage-path "$WORK/searches" --tracking-uri "sqlite:///$WORK/mlflow.db" --quiet
    echo "$((SECONDS - t0))" >"$WORK/search_seconds"
}
export -f search_gpu
if [ -z "$missing" ] || ! echo " $missing " | grep -Eq ' (ray|mlflow|hpbandster|ConfigSpace|soundfile) '; then
    run_step "2-trial search, --gpus-per-trial 0.5" 200 60 search_gpu
else
    say "SKIP search: missing $missing"
    STEPS+=("| 2-trial search, --gpus-per-trial 0.5 | skipped (missing: $missing) | 0 |")
fi
{
    echo "### (e) 2-trial BOHB search with \`--gpus-per-trial 0.5\`"
    echo
    if [ -f "$WORK/searches/gpu-frac/trials.csv" ]; then
        "$VPY" - "$WORK/searches/gpu-frac" "$(cat "$WORK/search_seconds" 2>/dev/null || echo '?')" <<'EOF' || echo "(could not summarise trials.csv)"
import json, sys
from pathlib import Path
import pandas as pd
d = Path(sys.argv[1]); t = pd.read_csv(d / "trials.csv"); best = json.loads((d / "best_config.json").read_text())
per = t.groupby("trial_id").agg(status=("status", "first"), epochs=("epoch", "max"), train=("train_seconds", "sum"))
print(f"fan, data.synth 2 s clips, tiny encoder (D 32, depth 2), 2 trials, max_t 3, η 3, 0.5 GPU + 1 CPU per trial; "
      f"search wall {sys.argv[2]} s (CLI, incl. Ray start). Best {best['metric']['name']} = {best['metric']['value']:.3f}.")
print()
print("| trial | status | epochs | Σ train_seconds |")
print("|---|---|---:|---:|")
for tid, r in per.iterrows():
    print(f"| {tid} | {r.status} | {int(r.epochs)} | {r.train:.1f} |")
EOF
    else
        echo "no trials.csv: the search did not run or failed (see the step table and gpu_check.log)"
    fi
    echo
} >>"$MD"

# ------------------------------------------------------------------ summary
{
    echo "### Steps"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---:|"
    printf '%s\n' "${STEPS[@]}"
    echo
    echo "Whole run: $((SECONDS - START)) s (budget ${TOTAL_BUDGET_S} s)."
} >>"$MD"
if [ "$FAILED" != 0 ]; then
    echo >>"$MD"
    echo "Some step failed or timed out; the last lines of the log:" >>"$MD"
    { echo '```'; tail -n 25 "$LOG"; echo '```'; } >>"$MD"
fi
cat "$MD"
exit "$FAILED"
