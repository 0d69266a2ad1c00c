#!/usr/bin/env bash
# The one prepared GPU check (target: under 6 minutes on one H100, no network needed):
#   1. env      card, driver, versions                         -> $OUT/env.json
#   2. install  build + install warmfast from this checkout   (pip, --no-index)
#   3. kernels  kernel tests on the GPU (real compile, no TRITON_INTERPRET) -> $OUT/kernel_tests.xml
#   4. bench    kernel benches, kernel vs *_ref               -> $OUT/kernel_bench.json
#   5. e2e      scoring on a Llama-3.1-8B-shaped random bf16 model, base + 8 rank-16 adapters,
#               256-token rows: warmfast vs HF+PEFT mixed, HF+PEFT loop, HF base-only -> $OUT/e2e_*.json
#   6. e2e_generate  generation on the same model folders, batch 64 and 256, 128 prompt + 128 new
#               tokens: warmfast vs HF+PEFT generate (HF only at batch <= WF_HF_GEN_ROWS) -> $OUT/e2e_generate_*.json
#   7. table    a short summary                               -> $OUT/gpu_check.json
# Every step runs (a failed step is recorded, not fatal); the exit status is non-zero if any failed.
# Step limits add up to 17 minutes (env 60 + install 120 + kernels 150 + bench 90 + e2e 240 +
# e2e_generate 300 + table 60 s at most), more than one 10-minute device call: on a 15-minute device
# budget run it as two calls, `WF_SKIP="e2e_generate"` first, then `WF_SKIP="kernels bench e2e"`
# (the second rebuilds the random model: give it the same WORKDIR only on the same warm machine).
#   bash bench/gpu_check.sh                  # OUT defaults to bench/results/gpu_check_<UTC stamp>
#   WF_SKIP="bench e2e" bash bench/gpu_check.sh
# Copy $OUT into bench/results/ afterwards: every GPU run is kept there with card and date.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu_check_$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PY="${PY:-python3}"
WORKDIR="${WF_WORKDIR:-/tmp/wf_gpu_check}"
unset TRITON_INTERPRET
: > "$OUT/steps.jsonl"
failed=0

step() {  # step NAME TIMEOUT_S CMD...: run, log to $OUT/NAME.log, record rc and seconds
  local name=$1 limit=$2; shift 2
  if [[ " ${WF_SKIP:-} " == *" $name "* ]]; then
    echo "== $name: skipped (WF_SKIP)"; echo "{\"step\": \"$name\", \"rc\": null, \"note\": \"skipped by WF_SKIP\"}" >> "$OUT/steps.jsonl"; return
  fi
  local t0=$SECONDS rc
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; rc=$?
  tail -n 15 "$OUT/$name.log"
  echo "== $name: rc=$rc in $((SECONDS - t0))s"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$OUT/steps.jsonl"
  [[ $rc -eq 0 ]] || failed=1
}

have() { "$PY" -c "import $1" > /dev/null 2>&1; }

step env 60 "$PY" - "$OUT/env.json" <<'PYEOF'
import datetime, json, platform, shutil, subprocess, sys
import torch, triton
info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "python": sys.version.split()[0], "torch": torch.__version__,
        "triton": triton.__version__, "cuda": torch.version.cuda,
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
for mod in ("transformers", "peft", "flash_attn", "pytest", "pytest_benchmark"):
    try:
        info[mod] = __import__(mod).__version__
    except ImportError:
        info[mod] = None
if shutil.which("nvidia-smi"):
    info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                         "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch")
PYEOF

step install 120 "$PY" -m pip install --no-build-isolation --no-deps --no-index .

if have pytest; then
  step kernels 150 "$PY" -m pytest tests/test_norm.py tests/test_rope.py tests/test_logprob.py \
    tests/test_attention.py tests/test_lora.py -q -p no:cacheprovider --junitxml="$OUT/kernel_tests.xml"
else
  echo "== kernels: NOT RUN: pytest is not installed on this machine"; failed=1
  echo '{"step": "kernels", "rc": null, "note": "pytest not installed"}' >> "$OUT/steps.jsonl"
fi

if have pytest_benchmark; then
  step bench 90 "$PY" -m pytest bench/bench_norm.py bench/bench_rope.py bench/bench_logprob.py bench/bench_sampling.py \
    bench/bench_attention.py bench/bench_lora.py -q -s -p no:cacheprovider \
    --benchmark-json="$OUT/kernel_bench.json" --benchmark-columns=median,rounds
else
  echo "== bench: NOT RUN: pytest-benchmark is not installed on this machine"
  echo '{"step": "bench", "rc": null, "note": "pytest-benchmark not installed"}' >> "$OUT/steps.jsonl"
fi

# 288 rows = 9 arms (base + 8 adapters) x 32 rows of 236 context + 20 continuation tokens
step e2e 240 "$PY" bench/e2e_score.py --preset llama8b --device cuda --dtype bfloat16 \
  --backend "${WF_BACKEND:-auto}" --adapters 8 --rank 16 --ctx 236 --cont 20 --rows 288 \
  --reps 2 --workdir "$WORKDIR" --out "$OUT"

# generation: the same model folders; batch 64 and 256, 128 prompt + 128 new tokens; eager and
# with per-bucket CUDA graphs (a capture failure is recorded in the JSON, eager still measured)
step e2e_generate 300 "$PY" bench/e2e_generate.py --preset llama8b --device cuda --dtype bfloat16 \
  --backend "${WF_BACKEND:-auto}" --adapters 8 --rank 16 --prompt 128 --new 128 --rows 64 256 \
  --hf-max-rows "${WF_HF_GEN_ROWS:-64}" --reps 1 --cuda-graphs --workdir "$WORKDIR" --out "$OUT"

step table 60 "$PY" - "$OUT" <<'PYEOF'
import glob, json, os, sys
import xml.etree.ElementTree as ET
out = sys.argv[1]
summary = {"env": json.load(open(f"{out}/env.json")) if os.path.exists(f"{out}/env.json") else None,
           "steps": [json.loads(l) for l in open(f"{out}/steps.jsonl") if l.strip()]}
if os.path.exists(f"{out}/kernel_tests.xml"):
    suite = ET.parse(f"{out}/kernel_tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["kernel_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    print("kernel tests: {tests} run, {failures} failed, {errors} errors, {skipped} skipped".format(**summary["kernel_tests"]))
if os.path.exists(f"{out}/kernel_bench.json"):
    rows = []
    print(f"{'bench':<58}{'us':>10}{'TFLOP/s':>9}{'GB/s':>8}{'of peak':>9}")
    for b in json.load(open(f"{out}/kernel_bench.json"))["benchmarks"]:
        e = b.get("extra_info", {})
        us = e.get("seconds_per_launch", float("nan")) * 1e6
        frac = e.get("fraction_of_matmul_ceiling", e.get("fraction_of_copy_ceiling"))
        rows.append({"name": b["name"], "us": us, **e})
        print(f"{b['name']:<58}{us:>10.1f}{e.get('tflops', float('nan')):>9.1f}{e.get('gb_per_s', float('nan')):>8.0f}"
              f"{'' if frac is None else f'{frac:.0%}':>9}")
    summary["kernel_bench"] = rows
e2e = sorted(glob.glob(f"{out}/e2e_score_*.json"))
if e2e:
    rec = json.load(open(e2e[-1]))
    summary["e2e"] = rec
    tps = rec["tokens_per_s"]
    print(f"e2e scoring, {rec.get('card')}, {rec['preset']} {rec['dtype']}, {rec['adapters']} adapters r{rec['rank']}, "
          f"{rec['tokens']} tokens, backend {rec.get('backend')}")
    for k, v in tps.items():
        print(f"  {k:<16}{v:>12.0f} tokens/s   warmfast x{tps['warmfast'] / v:.2f}")
    print(f"  goal on an H100: >= 45000 tokens/s for warmfast -> {'met' if tps['warmfast'] >= 45000 else 'NOT met'}")
for path in sorted(glob.glob(f"{out}/e2e_generate_*.json")):
    rec = json.load(open(path))
    summary.setdefault("e2e_generate", []).append(rec)
    print(f"e2e generation: {os.path.basename(path)}")
    print("  " + json.dumps({k: rec[k] for k in rec if "tokens_per_s" in k or k in ("rows", "ratio_vs_hf_peft_mixed")}))
json.dump(summary, open(f"{out}/gpu_check.json", "w"), indent=2)
print(f"summary -> {out}/gpu_check.json")
PYEOF

exit $failed
