#!/usr/bin/env bash
# The README's "Results on the tiny default": warm-up once, then IBPO (reward and margin utility) and the
# SV-SFT / ASV-SFT baselines from the same warm-up model at equal settings, each evaluated on 64 test
# problems per level; plus the README job itself. One thread per run, two runs at a time (2 cores).
#
#   bash benchmarks/tiny_results.sh [OUT] [SEED]   # OUT defaults to runs/final, SEED to 0; ~5 min on 2 cores
#
# The trained accuracy varies a lot with the seed (and with ulp-level changes of the numerics, which move a
# 1,200-step warm-up elsewhere): compare runs of the same seed, and report several seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/final}
seed=${2:-0}
export PYTHONPATH=. OMP_NUM_THREADS=1
cli="python -m ibpo_fast.cli"
mkdir -p "$out"
run() { local name=$1; shift; /usr/bin/time -f "$name wall %e s" -a -o "$out/times.txt" $cli "$@" > "$out/$name.log" 2>&1; }

run tiny train --preset tiny --seed=$seed --progress=false --out "$out/tiny" &
run warm train --preset tiny --seed=$seed --steps 0 --progress=false --out "$out/warm"
wait
from_warm=(--preset tiny --seed=$seed --init_from="$out/warm/model.pt" --warmup_steps=0 --progress=false)
run ibpo train "${from_warm[@]}" --out "$out/ibpo" &
run ibpo_margin train "${from_warm[@]}" --utility=margin --out "$out/ibpo_margin"
wait
run sv_sft train "${from_warm[@]}" --mode=sft --sft_format=sv --out "$out/sv_sft" &
run asv_sft train "${from_warm[@]}" --mode=sft --sft_format=asv --out "$out/asv_sft"
wait
for pair in "tiny warm" "ibpo ibpo_margin" "sv_sft asv_sft"; do
  set -- $pair
  run "eval_$1" eval --checkpoint="$out/$1" &
  run "eval_$2" eval --checkpoint="$out/$2"
  wait
done
# How much a vote gains over one attempt on the warm-up model (forced formats).
for format in regular sv; do
  run "eval_warm_$format" eval --checkpoint="$out/warm" --problems_per_level=128 --prompt_format=$format \
    --out="$out/warm/eval_$format.json" &
done
wait
for name in tiny ibpo ibpo_margin; do $cli plot --metrics "$out/$name/metrics.jsonl" --out "$out/$name" > /dev/null; done
python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print("| run | accuracy | extended share | tokens / problem | per level: acc / ext |")
for name in ("warm", "ibpo", "ibpo_margin", "sv_sft", "asv_sft", "tiny"):
    e = json.load(open(f"{out}/{name}/eval.json"))
    levels = " ; ".join(f"L{k} {v['accuracy']:.2f} / {v['extended_share']:.2f}" for k, v in e["levels"].items())
    print(f"| {name} | {e['accuracy']:.3f} | {e['extended_share']:.2f} | {e['tokens_per_problem']:.1f} | {levels} |")
for name in ("tiny", "ibpo", "ibpo_margin"):
    steps = [json.loads(line) for line in open(f"{out}/{name}/metrics.jsonl")]
    print(f"{name}: max selected_extended_share {max(s['selected_extended_share'] for s in steps):.3f} (q {steps[0]['q']})")
PY
