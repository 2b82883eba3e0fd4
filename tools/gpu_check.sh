#!/usr/bin/env bash
# One prepared GPU check (<= 8 min: the step limits add up to 470 s): the Triton kernel, golden and gradient
# tests on CUDA, then tools/gpu_bench.py (samples/s at ~1e8, 1e9, 1e10 samples end to end and per added mosaic
# domain, float32 and float64, every kernel variant; set-up per render; the Pilatus 6M case; 1,000 batched
# stills; peak GPU memory). Writes report.md + report.json (and the drift report of the golden run) into $OUT
# if set, else ./gpu_report/, and prints the key numbers.
#
#   tools/gpu_check.sh [--wheels DIR] [--dry-run]        (or NB_WHEELS=DIR)
#
# Runs without installing the package: the system python's torch (and its triton), PYTHONPATH=<repo>. Extra
# pure-Python wheels the tests need and the machine lacks (syrupy, deepdiff, orderly-set, ...) are installed
# from DIR with pip --no-index --no-deps into a scratch site directory. Every step is time-boxed; a failing
# step is recorded and the script goes on. --dry-run checks this script on a machine without a GPU: the kernel
# tests through Triton's interpreter, the benchmark at toy sizes on the CPU, no CUDA steps; its numbers mean
# nothing. Exit status: 0 when every step passed, 1 otherwise.
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${OUT:-$repo/gpu_report}"
wheels="${NB_WHEELS:-}"
dry=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels="$2"; shift 2 ;;
        --dry-run) dry=1; shift ;;
        *) echo "gpu_check: unknown argument $1 (usage: tools/gpu_check.sh [--wheels DIR] [--dry-run])" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
py="${PYTHON:-python3}"
site="$(mktemp -d /tmp/nb_gpu_site.XXXXXX)"
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}"
device=cuda
[ "$dry" -eq 1 ] && device=cpu
export NB_REPO_ROOT="$repo" NB_DEVICE=$device NB_KERNEL_CACHE="$site/kernels" PYTHONDONTWRITEBYTECODE=1
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
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton ABSENT: the Triton kernel rows are skipped')
import deepdiff, syrupy, nanobragg_torch.parity.drift
print('deepdiff', deepdiff.__version__, 'syrupy ok')
"
cd "$repo"
pytest_common=(-p nanobragg_torch.parity.drift -p no:cacheprovider -q -m "not slow and not needs_c")
# the Triton kernel against the evaluator (compiled on the device; interpreted with --dry-run), and its dispatch
step "kernel_$device" 50 "$py" -m pytest "${pytest_common[@]}" tests/test_gpu_kernel.py
if [ "$dry" -eq 0 ]; then
    step golden_cuda 140 "$py" -m pytest "${pytest_common[@]}" --drift-report "$out/drift" \
        tests/golden/test_golden_parity.py -k "image_matches or traces_match or trace_is_the_image or statistics"
    step gradients_cuda 50 "$py" -m pytest "${pytest_common[@]}" tests/test_gradients.py
    step bench 200 "$py" tools/gpu_bench.py --json "$out/bench.json" --budget 170
else
    step bench 200 "$py" tools/gpu_bench.py --json "$out/bench.json" --budget 170 --dry-run
fi

"$py" - "$out" "$(( $(date +%s) - start_all ))" <<'EOF'
import json, sys
from pathlib import Path
out, total = Path(sys.argv[1]), int(sys.argv[2])
steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line]
def tail(name):
    p = out / f"{name}.log"
    lines = [l for l in p.read_text(errors="replace").splitlines() if l.strip()] if p.exists() else []
    return lines[-1] if lines else "(no output)"
bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
doc = {"total_s": total, "steps": [{"name": n, "rc": int(rc), "seconds": int(s), "last": tail(n)}
                                   for n, rc, s in steps], "bench": bench}
(out / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
def g(v, fmt=".3g"):
    return "-" if v is None else format(v, fmt)
info = bench.get("info", {})
md = [f"# GPU check ({total} s){' -- DRY RUN: CPU, toy sizes, numbers meaningless' if info.get('dry_run') else ''}",
      "", f"device {info.get('gpu')}, torch {info.get('torch')}, CUDA {info.get('cuda')}, "
      f"triton {info.get('triton')}, {info.get('date')}", "",
      "| step | exit | seconds | last line |", "|---|---|---|---|"]
md += [f"| {s['name']} | {s['rc']} | {s['seconds']} | {s['last'][:110]} |" for s in doc["steps"]]
rows = bench.get("scaling", [])
if rows:
    md += ["", "## Samples/s: 1024 x 1024 cubic, 100 / 1,000 / 10,000 mosaic domains (build_plan + render)", "",
           "| variant | dtype | domains | samples | first s | best s | render s | samples/s | marginal samples/s "
           "| peak GPU MiB | note |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['variant']} | {r.get('dtype', '-')} | {r.get('domains', '-')} | {g(r.get('samples'))} | "
                  f"{g(r.get('first_s'))} | {g(r.get('best_s'))} | {g(r.get('render_s'))} | "
                  f"{g(r.get('samples_per_s'))} | {g(r.get('marginal_samples_per_s'))} | "
                  f"{g(r.get('peak_gpu_MiB'), '.0f')} | {r.get('skipped') or r.get('error') or ''} |")
for key, title in (("setup", "Set-up: 64 x 64, one sample per pixel, cached plan"), ("pilatus", "Pilatus 6M"),
                   ("stills", "1,000 stills, 256 x 256, 10 samples per pixel, batched")):
    if key in bench:
        md += ["", f"## {title}", ""] + [f"- {k}: {g(v) if isinstance(v, float) else v}"
                                        for k, v in bench[key].items() if k != "section"]
(out / "report.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
failed=$(awk -F'\t' '$2 != 0' "$steps" | wc -l)
echo "gpu_check: $failed failing step(s); report in $out/report.md"
[ "$failed" -eq 0 ]
