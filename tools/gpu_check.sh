#!/usr/bin/env bash
# One prepared GPU check (<= 8 min: the step limits add up to 470 s): the CUDA golden and gradient tests, then a GPU benchmark (samples/s in
# float32 and float64, ratio to this machine's CPU, peak GPU memory). Writes report.md + report.json (and
# the drift report of the golden run) into $OUT if set, else ./gpu_report/, and prints the key numbers.
#
#   tools/gpu_check.sh [--wheels DIR]        (or NB_WHEELS=DIR)
#
# Runs without installing the package: the system python's torch, PYTHONPATH=<repo>. Extra pure-Python
# wheels the tests need and the machine lacks (syrupy, deepdiff, orderly-set, ...) are installed from DIR
# with pip --no-index --no-deps into a scratch site directory. Every step is time-boxed; a failing step is
# recorded and the script goes on. Exit status: 0 when every step passed, 1 otherwise.
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$repo/gpu_report}"
wheels="${NB_WHEELS:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        *) echo "gpu_check: unknown argument $1 (usage: tools/gpu_check.sh [--wheels DIR])" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
py="${PYTHON:-python3}"
site="$(mktemp -d /tmp/nb_gpu_site.XXXXXX)"
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
export NB_REPO_ROOT="$repo" NB_DEVICE=cuda NB_KERNEL_CACHE="$site/kernels" PYTHONDONTWRITEBYTECODE=1
steps="$out/steps.tsv"
: > "$steps"
start_all=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run time-boxed, log to $out/NAME.log, record rc and seconds
    local name="$1" limit="$2"; shift 2
    local t0=$(date +%s)
    echo "== $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - t0 ))
    printf '%s\t%s\t%s\n' "$name" "$rc" "$dt" >> "$steps"
    tail -n 3 "$out/$name.log"
    echo "-- $name: exit $rc in ${dt}s"
}

if [ -n "$wheels" ]; then
    step wheels 30 "$py" -m pip install --no-index --no-deps --target "$site" "$wheels"/*.whl
fi
step environment 30 "$py" -c "
import torch, sys
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE')
import deepdiff, syrupy, nanobragg_torch.parity.drift
print('deepdiff', deepdiff.__version__, 'syrupy ok')
"
cd "$repo"
pytest_common=(-p nanobragg_torch.parity.drift -p no:cacheprovider -q -m "not slow and not needs_c")
step golden_cuda 180 "$py" -m pytest "${pytest_common[@]}" --drift-report "$out/drift" \
    tests/golden/test_golden_parity.py -k "image_matches or traces_match or trace_is_the_image or statistics"
step gradients_cuda 70 "$py" -m pytest "${pytest_common[@]}" tests/test_gradients.py
step bench 110 "$py" tools/gpu_bench.py --json "$out/bench.json" --seconds 5 --cpu-seconds 4
step bench_compiled 50 "$py" tools/gpu_bench.py --json "$out/bench_compiled.json" --seconds 4 --cpu-seconds 0 \
    --compile 1

"$py" - "$out" "$(( $(date +%s) - start_all ))" <<'EOF'
import json, re, sys
from pathlib import Path
out, total = Path(sys.argv[1]), int(sys.argv[2])
steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line]
def tail(name, n=1):
    p = out / f"{name}.log"
    lines = [l for l in p.read_text(errors="replace").splitlines() if l.strip()] if p.exists() else []
    return lines[-n:] if lines else ["(no output)"]
bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else None
comp = json.loads((out / "bench_compiled.json").read_text()) if (out / "bench_compiled.json").exists() else None
doc = {"total_s": total, "steps": [{"name": n, "rc": int(rc), "seconds": int(s), "last": tail(n)[0]}
                                   for n, rc, s in steps], "bench": bench, "bench_compiled": comp}
(out / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
md = [f"# GPU check ({total} s)", "", "| step | exit | seconds | last line |", "|---|---|---|---|"]
md += [f"| {s['name']} | {s['rc']} | {s['seconds']} | {s['last'][:110]} |" for s in doc["steps"]]
for title, b in (("eager kernel", bench), ("torch.compile kernel", comp)):
    if not b:
        continue
    md += ["", f"## Benchmark, {title}: {b['info'].get('gpu')} (torch {b['info']['torch']})", "",
           "| device | dtype | samples | best s | samples/s | peak GPU MiB | first call s |", "|---|---|---|---|---|---|---|"]
    for r in b["rows"]:
        md.append(f"| {r['device']} | {r['dtype']} | {r['samples']} | {r['best_s']:.4f} | {r['samples_per_s']:.3g} | "
                  f"{r.get('peak_gpu_mem_MiB', float('nan')):.0f} | {r['first_call_s']:.2f} |")
    for k, v in b["info"].items():
        if k.startswith(("gpu_over_cpu", "image_rel_diff")):
            md.append(f"\n{k}: {v:.4g}")
(out / "report.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
failed=$(awk -F'\t' '$2 != 0' "$steps" | wc -l)
echo "gpu_check: $failed failing step(s); report in $out/report.md"
[ "$failed" -eq 0 ]
