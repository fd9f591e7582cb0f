#!/usr/bin/env bash
# Download into .whl/ (git-ignored) the wheels a device machine lacks for Python 3.12 on x86-64, so that
# bench/gpu_check.py runs there with no network (docs/gpu.md: the `run` call carries .whl).
#   bash scripts/gpu_wheels.sh            # idempotent: wheels already in .whl/ are not downloaded again
#
# The device image has torch 2.11 + CUDA 13, transformers 5.17, accelerate 1.15, huggingface-hub 1.33, pyarrow,
# pandas, xxhash, rich, scipy, scikit-learn, statsmodels, matplotlib and pyyaml, but not TRL, datasets or
# bitsandbytes. The list below is what TRL 1.16 and datasets 5.2 require beyond that (dill, multiprocess), what
# rlhfkit requires beyond that (krippendorff), and the versions this project tests with:
#   transformers: rlhfkit needs 5.23 (activation_checkpointing); 5.23.0 needs nothing newer than the image has,
#     where 5.24 and later need huggingface-hub 2.4 and kernels;
#   fsspec: datasets 5.2 requires <= 2026.9.0 and the image's version is not recorded;
#   peft: the image has peft, its version is not recorded; rlhfkit's LoRA paths are measured with the tested one;
#   bitsandbytes: QLoRA (41 MiB: CUDA kernels for 11.8 to 13.2; it fits the 64 MiB carry limit with the tree).
# Every name is pinned and downloaded with --no-deps: pip resolves nothing, so nothing unlisted arrives.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DIR=.whl
LIMIT_MIB=64  # what one device call carries: the working tree and the carried paths together
WHEELS=(
  transformers==5.23.0
  trl==1.16.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  fsspec==2026.9.0
  peft==0.21.2
  krippendorff==0.9.0
  bitsandbytes==0.50.2
)
mkdir -p "$DIR"

wheel_of() {  # the .whl/ file of NAME==VERSION, if downloaded (wheel file names use lower case and '_')
  local name=${1%%==*} version=${1##*==}
  name=$(echo "$name" | tr 'A-Z-' 'a-z_')
  compgen -G "$DIR/${name}-${version}-*.whl" | head -n 1 || true
}

missing=()
for spec in "${WHEELS[@]}"; do
  [ -n "$(wheel_of "$spec")" ] || missing+=("$spec")
done
if [ ${#missing[@]} -gt 0 ]; then
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DIR" "${missing[@]}"
fi

# One version of each name: two would stop the device's `pip install --no-deps` of .whl/*.whl.
expected=()
for spec in "${WHEELS[@]}"; do
  file=$(wheel_of "$spec")
  [ -n "$file" ] || { echo "error: $spec was not downloaded; check the network and the version" >&2; exit 1; }
  expected+=("$file")
done
for file in "$DIR"/*.whl; do
  if [[ ! " ${expected[*]} " =~ " $file " ]]; then
    echo "error: $file is not in this script's list (another version?); delete it so .whl/ holds one of each" >&2
    exit 1
  fi
done

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
wheels=$(du -cb "$DIR"/*.whl | tail -n 1 | cut -f1)
bnb=$(du -b "$(wheel_of bitsandbytes==0.50.2)" | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" { s += $1 } END { print s + 0 }')
total=$((wheels + tree))
echo "$DIR: ${#WHEELS[@]} wheels, $(mib "$wheels") MiB (bitsandbytes $(mib "$bnb") MiB); tracked tree $(mib "$tree") MiB;" \
  "a device call carries $(mib "$total") of $LIMIT_MIB MiB"
if [ "$total" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: over the ${LIMIT_MIB} MiB a device call carries; drop bitsandbytes from WHEELS (QLoRA then stays" \
    "unmeasured)" >&2
  exit 1
fi
