#!/usr/bin/env bash
# The one prepared GPU check: correctness and timings of warmfast on a lent card, no network.
#
#   env       card, driver, versions                           -> env.json
#   install   pip install --no-build-isolation --no-deps --no-index .  (skipped when this machine
#             already installed the same sources in this WF_WORKDIR)
#   kernels   kernel tests on the card (real compiles, no interpreter): pytest -n 8 --timeout 60
#             -> kernel_tests.xml
#   bench     kernel benches, kernel vs *_ref                  -> kernel_bench.json
#   e2e       one process (bench/e2e_check.py): a Llama-3.1-8B-shaped random bf16 model + 8 rank-16
#             adapters built once in memory; mixed scoring (288 rows of 236 + 20 tokens, every
#             batch holding all 9 arms) vs HF+PEFT mixed and base-only; mixed generation of
#             128 + 128 tokens at batch 64 (vs HF+PEFT) and 256, eager, sampled and CUDA graphs
#             -> records/*.json
#   profile   bench/gpu_profile.py: one mixed scoring call and a 64-row generate (eager, graphs)
#             under torch.profiler: kernel time by family, device busy fraction -> records/*.json
#   table     one table: each measure beside its goal and HF+PEFT's number
#
# What comes back: $OUT holds only gpu_check.json (the summary) and gpu_check.tar.gz (every log
# and record), both refreshed after every step, so a run killed at any point still returns what
# it measured. One global deadline (WF_DEADLINE_S, default 450 s): each step runs for
# min(its cap, the time left) and a step that cannot get its minimum is skipped and recorded.
# Nothing is downloaded (pip --no-index, HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1) and the CPU
# test suite never runs here.
#
# On a 15-minute device budget: two calls of under 8 minutes each (run tool timeout_s ~500):
#   WF_SKIP="e2e" bash bench/gpu_check.sh                  # env, install, kernels, bench, profile (~4 min)
#   WF_SKIP="kernels bench profile" bash bench/gpu_check.sh   # env, install, e2e  (~4 min)
# (H200, 2026-12-04: env 22 s, install 14 s, kernels 52 s, bench 37 s, e2e 173 s with HF+PEFT)
# The second call may land on a fresh machine: it reinstalls (about a minute) and rebuilds the
# random model in memory (about 30 s); nothing from the first call is needed.
#
#   bash bench/gpu_check.sh --dry-run   # the same steps on this CPU: tiny shapes, the Triton
#                                       # interpreter, the torch backend; install into a scratch
#                                       # folder (tests/test_gpu_check.py runs it)
# Copy what comes back into bench/results/ with card and date: every GPU run is kept there.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT="${OUT:-bench/results/gpu_check_$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PY="${PY:-python3}"
WORK="${WF_WORKDIR:-/tmp/wf_gpu_check}"  # scratch: install stamp, model config, adapters
FILES="$WORK/files"                      # everything the archive holds
rm -rf "$FILES"
mkdir -p "$FILES/records"
DEADLINE=${WF_DEADLINE_S:-450}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PIP_NO_INDEX=1
export PYTHONUNBUFFERED=1
if (( DRY )); then export TRITON_INTERPRET=1; else unset TRITON_INTERPRET; fi
: > "$FILES/steps.jsonl"
failed=0

record() {  # record NAME RC SECONDS LIMIT NOTE
  printf '{"step": "%s", "rc": %s, "seconds": %s, "limit_s": %s, "note": "%s"}\n' "$1" "$2" "$3" "$4" "$5" \
    >> "$FILES/steps.jsonl"
}

refresh() {  # the summary and the archive under $OUT, rewritten after every step
  "$PY" bench/gpu_check_summary.py "$FILES" "$FILES/gpu_check.json" > "$WORK/summary.log" 2>&1 \
    || echo "summary failed: $(tail -n 3 "$WORK/summary.log")"
  cp "$FILES/gpu_check.json" "$OUT/gpu_check.json" 2> /dev/null
  tar -czf "$WORK/gpu_check.tar.gz" -C "$FILES" . && cp "$WORK/gpu_check.tar.gz" "$OUT/gpu_check.tar.gz"
}

step() {  # step NAME CAP_S MIN_S CMD...: run with min(cap, time left), log to NAME.log, record
  local name=$1 cap=$2 min=$3; shift 3
  if [[ " ${WF_SKIP:-} " == *" $name "* ]]; then
    echo "== $name: skipped (WF_SKIP)"; record "$name" null 0 0 "skipped by WF_SKIP"; refresh; return
  fi
  local left=$((DEADLINE - SECONDS))
  local limit=$(( cap < left ? cap : left ))
  if (( limit < min )); then
    echo "== $name: skipped, out of time (${left}s left, needs ${min}s)"
    record "$name" null 0 0 "skipped: out of time (${left}s left of ${DEADLINE}s, needs ${min}s)"
    failed=1; refresh; return
  fi
  local t0=$SECONDS rc
  echo "== $name (limit ${limit}s)"
  WF_STEP_LIMIT=$limit timeout -k 10 "$limit" "$@" > "$FILES/$name.log" 2>&1; rc=$?
  tail -n 12 "$FILES/$name.log"
  local note=""
  (( rc == 124 || rc == 137 )) && note="killed at its limit (${limit}s)"
  echo "== $name: rc=$rc in $((SECONDS - t0))s"
  record "$name" "$rc" $((SECONDS - t0)) "$limit" "$note"
  [[ $rc -eq 0 ]] || failed=1
  refresh
}

plugin() { "$PY" -c "import $1" > /dev/null 2>&1; }

step env 60 5 "$PY" - "$FILES/env.json" "$DRY" <<'PYEOF'
import datetime, json, platform, shutil, subprocess, sys
import torch, triton
info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": sys.version.split()[0], "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda, "dry_run": sys.argv[2] == "1",
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
for mod in ("transformers", "peft", "flash_attn", "pytest", "pytest_benchmark", "xdist", "pytest_timeout", "numpy",
            "setuptools", "wheel", "pybind11"):
    try:
        info[mod] = getattr(__import__(mod), "__version__", "present")
    except ImportError:
        info[mod] = None
if shutil.which("nvidia-smi"):
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
if not torch.cuda.is_available() and sys.argv[2] != "1":
    sys.exit("no CUDA device visible to torch")
PYEOF

# install: the device image's command; the dry run builds the same way into a scratch folder
SRC_HASH=$(find setup.py pyproject.toml csrc src kernels -type f \( -name '*.py' -o -name '*.cpp' -o -name '*.h' \
  -o -name '*.toml' \) -print0 | sort -z | xargs -0 cat | sha1sum | cut -c1-16)
if (( DRY )); then
  rm -rf "$WORK/dry_install"
  step install 240 30 bash -c "'$PY' -m pip install --no-build-isolation --no-deps --no-index --target '$WORK/dry_install' . \
    && PYTHONPATH='$WORK/dry_install' '$PY' -c 'import warmfast, warmfast._C, warmfast.kernels.lora; print(\"installed\", warmfast.__file__)'"
elif [[ -f "$WORK/installed_$SRC_HASH" ]] && "$PY" -c "import warmfast._C" > /dev/null 2>&1; then
  echo "== install: these sources ($SRC_HASH) are already installed on this machine"
  record install 0 0 0 "already installed ($SRC_HASH)"; refresh
else
  step install 240 30 "$PY" -m pip install --no-build-isolation --no-deps --no-index .
  [[ $(tail -n 1 "$FILES/steps.jsonl") == *'"rc": 0,'* ]] && touch "$WORK/installed_$SRC_HASH"
fi

# kernels: compile-bound on a card (each test shape compiles): 8 workers, 60 s per test; files whose
# tests run on the card (test_engine_triton.py runs the engine on CPU tensors: interpreter only)
KERNEL_TESTS=${WF_KERNEL_TESTS:-"tests/test_norm.py tests/test_rope.py tests/test_logprob.py tests/test_attention.py \
  tests/test_lora.py tests/test_sampling.py tests/test_kernel_runtime.py tests/test_cuda_graphs.py tests/test_activation.py \
  tests/test_live_adapters.py::test_live_loads_under_captured_cuda_graphs tests/test_gpu_equals_cpu.py"}
(( DRY )) && KERNEL_TESTS=${WF_KERNEL_TESTS:-"tests/test_norm.py tests/test_kernel_runtime.py"}
PAR=()
plugin xdist && PAR+=(-n "${WF_KERNEL_WORKERS:-8}")
plugin pytest_timeout && PAR+=(--timeout 60)
# shellcheck disable=SC2086
step kernels 240 60 "$PY" -m pytest $KERNEL_TESTS -q -p no:cacheprovider "${PAR[@]}" --junitxml="$FILES/kernel_tests.xml"

if plugin pytest_benchmark; then
  step bench 120 30 "$PY" -m pytest bench/bench_norm.py bench/bench_rope.py bench/bench_logprob.py bench/bench_sampling.py \
    bench/bench_attention.py bench/bench_lora.py -q -s -p no:cacheprovider \
    --benchmark-json="$FILES/kernel_bench.json" --benchmark-columns=median,rounds
else
  echo "== bench: NOT RUN: pytest-benchmark is not installed"; record bench null 0 0 "pytest-benchmark not installed"
fi

if (( DRY )); then  # tiny shapes on the CPU; CUDA graphs need a card (tests/test_cuda_graphs.py)
  E2E=(--preset tiny --device cpu --dtype float32 --adapters 2 --rank 4 --ctx 12 --cont 4 --score-rows 12
       --batch-tokens 64 --prompt 8 --new 4 --gen-rows 3 6 --hf-max-rows 3)
else
  E2E=(--preset llama8b --device cuda --dtype bfloat16 --adapters 8 --rank 16 --ctx 236 --cont 20
       --score-rows 288 --batch-tokens 8192 --prompt 128 --new 128 --gen-rows 64 256 --hf-max-rows 64 --cuda-graphs)
fi
# WF_E2E_EXTRA: arguments appended (later ones win), e.g. "--parts generate --hf-max-rows 1" for a
# rerun that only needs warmfast's generation numbers
# shellcheck disable=SC2086
step e2e 420 120 "$PY" bench/e2e_check.py "${E2E[@]}" --backend "${WF_BACKEND:-auto}" --no-hf-loop --reps 1 \
  --workdir "$WORK/e2e" --out "$FILES/records" ${WF_E2E_EXTRA:-}

if (( DRY )); then
  PROF=(--preset tiny --device cpu --dtype float32 --adapters 2 --rank 4 --ctx 12 --cont 4 --batch-tokens 64
        --gen-rows 3 --prompt 8 --new 4)
else
  PROF=(--preset llama8b --device cuda --dtype bfloat16 --adapters 8 --rank 16 --ctx 236 --cont 20
        --batch-tokens 8192 --gen-rows 64 --prompt 128 --new 16 --cuda-graphs)
fi
step profile 150 60 "$PY" bench/gpu_profile.py "${PROF[@]}" --backend "${WF_BACKEND:-auto}" --workdir "$WORK/e2e" \
  --out "$FILES/records"

echo "== table"
"$PY" bench/gpu_check_summary.py "$FILES" "$FILES/gpu_check.json" --table || failed=1
refresh
echo "summary -> $OUT/gpu_check.json, logs and records -> $OUT/gpu_check.tar.gz"
exit $failed
