#!/usr/bin/env bash
# GPU check: the CUDA test subset and the GPU benchmarks, everything written into one folder.
#
#   benchmarks/gpu_check.sh OUT_DIR [WHEEL_DIR]
#
# Needs python3 with torch and CuPy on a CUDA machine. spikingjelly (and dcls, for the
# DCLS comparison) are installed from wheels in WHEEL_DIR (default: benchmarks/wheels)
# when they are not importable. Each stage has a time limit; the whole script ends within
# 8.5 minutes (about 4 to 5 on an H200). Results: OUT_DIR/gpu_check.log and OUT_DIR/bench/.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${1:?usage: gpu_check.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-$here/wheels}
mkdir -p "$out"
log="$out/gpu_check.log"
cd "$root"

if ! python3 -c "import spikingjelly, DCLS" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/sj_spatial_site \
    "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/sj_spatial_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

{
  date -u +"%F %T UTC"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, cupy, spikingjelly, importlib.metadata as m; \
print('torch', torch.__version__, 'cuda', torch.version.cuda, '| cupy', cupy.__version__, \
'| spikingjelly', m.version('spikingjelly'))"
} > "$log" 2>&1

status=0
echo "== GPU tests" >> "$log"
timeout 150 python3 -m pytest -q -p no:cacheprovider \
  tests/test_backend_cupy.py tests/test_backend_cupy_lif.py tests/test_torch_cuda.py \
  >> "$log" 2>&1 || status=1
echo "== torch.compile on the GPU" >> "$log"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_compile.py -k cuda \
  >> "$log" 2>&1 || status=1

echo "== layer benchmark" >> "$log"
timeout 130 python3 benchmarks/bench_layers.py --device cuda --out "$out/bench" \
  --T 100 1000 --batch 16 64 256 --max-delay 25 64 250 --budget 2 >> "$log" 2>&1 || status=1

for cell in lif paper; do
  echo "== recurrent benchmark ($cell cell)" >> "$log"
  timeout 80 python3 benchmarks/bench_recurrent.py --device cuda --out "$out/bench" \
    --cell "$cell" --max-delay 25 250 --budget 4 >> "$log" 2>&1 || status=1
done

echo "== exit status $status" >> "$log"
tail -n 40 "$log"
exit $status
