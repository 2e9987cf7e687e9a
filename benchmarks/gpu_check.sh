#!/usr/bin/env bash
# GPU checks and benchmarks for one lent CUDA machine (an H200), in under 8 minutes. From the repository root:
#
#     bash benchmarks/gpu_check.sh          # writes to $OUT when set, else bench_out/gpu
#
# Needs: torch (CUDA), triton, transformers on the image; numba, highspy, tqdm, tokenizers for the train suite
# (skipped, saying so, when missing); wheels in .whl/ (liger-kernel, cut-cross-entropy, and any of those the
# image lacks) are installed with --no-deps into /tmp/site. Steps, each under its own time limit so that one
# stuck step cannot eat the others (a failed or cut step is reported and the next still runs; suites cut short
# leave <suite>.partial.json with the rows measured so far):
#   1. environment (nvidia-smi, versions)                                               ~10 s
#   2. python -m benchmarks compile: every Triton kernel compiled for sm_90 and sm_80 in bf16/f16/f32 at
#      the backend's launch table, ptxas resources from the cubins (fails on spills at a default)  <= 60 s
#   3. benchmarks/gpu_kernels_check.py: the Triton backend at T=8192, H=4096, V=128256 bf16 against the
#      torch backend on row slices and the f64 formula, its timings, and registers / spills of the
#      kernels the JIT compiled on this GPU (the measured twin of step 2)                          <= 110 s
#   4. python -m benchmarks kernels --device cuda: all methods, bf16 T = 8k..64k, f32 T = 8k           <= 170 s
#   5. python -m benchmarks train --device cuda: the step per budget, fused vs full-logits loss        <= 100 s
# At the end the detail folder is packed into gpu_results.tar.gz and removed, so the output folder holds at
# most 10 files, one level deep: gpu_check.log (everything printed), gpu_results.tar.gz (JSON, tables, PNGs),
# compile.md, kernels.md, train.md, compile.json, kernels.json, train.json, gpu_kernels_check.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench_out/gpu}"
detail="$out/detail"
mkdir -p "$detail"
exec > >(tee -a "$out/gpu_check.log") 2>&1

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
else
    echo "no .whl/ wheels: liger and cce rows will say 'not installed'"
fi

failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log the outcome, never abort the script
    local name=$1 limit=$2; shift 2
    echo; echo "=== $name (limit ${limit}s): $*"; local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"; local rc=$?
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed+=("$name(rc=$rc)")
}

step environment 20 bash -c 'nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
    python3 -c "import torch, triton, transformers; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
        \"triton\", triton.__version__, \"transformers\", transformers.__version__)"
    python3 -c "import liger_kernel, cut_cross_entropy; print(\"peers installed\")" || echo "peers missing"'
step compile 60 python3 -m benchmarks compile --out "$detail" --jobs 8
step triton_check 110 bash -c "set -o pipefail; python3 -m benchmarks.gpu_kernels_check --repeats 3 | tee '$detail/gpu_kernels_check.txt'"
step kernels 170 python3 -m benchmarks kernels --device cuda --out "$detail" --repeats 3 --dtypes bfloat16 float32
if python3 -c "import numba, highspy, tqdm, tokenizers" 2>/dev/null; then
    step train 100 python3 -m benchmarks train --device cuda --out "$detail" --repeats 2 --warmup-steps 300
else
    echo "=== train: skipped, the image lacks one of numba, highspy, tqdm, tokenizers (add their wheels to .whl/)"
    failed+=("train(skipped)")
fi

for name in compile.md kernels.md train.md compile.json kernels.json train.json gpu_kernels_check.txt; do
    [ -f "$detail/$name" ] && cp "$detail/$name" "$out/"
done
for name in kernels train; do  # a suite cut by its limit: keep what it measured
    [ -f "$out/$name.json" ] || { [ -f "$detail/$name.partial.json" ] && cp "$detail/$name.partial.json" "$out/$name.json"; }
done
tar -czf "$out/gpu_results.tar.gz" -C "$out" detail && rm -rf "$detail"
echo; echo "=== done in $SECONDS s; output in $out: $(ls "$out" | tr '\n' ' ')"
[ ${#failed[@]} -eq 0 ] && echo "=== all steps passed" || echo "=== failed or skipped: ${failed[*]}"
[ ${#failed[@]} -eq 0 ]
