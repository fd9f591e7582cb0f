#!/usr/bin/env bash
# On a device machine (no network): install the wheels scripts/gpu_wheels.sh downloaded into .whl/, into /tmp/site,
# and check that rlhfkit's trainers import. Run it from the repository root, then run Python with
#   PYTHONPATH=/tmp/site:$PWD python3 ...      (docs/gpu.md has the whole `run` call)
# Prints one line of versions; exits 1 with one line naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=/tmp/site
compgen -G ".whl/*.whl" >/dev/null \
  || { echo "error: no wheels in .whl/; run bash scripts/gpu_wheels.sh here and name .whl in the run call's carry" >&2; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
PYTHONPATH="$SITE:$PWD" python3 - <<'EOF'
import importlib
import sys

missing = []
for module in ("rlhfkit.train", "trl", "datasets", "peft", "bitsandbytes", "krippendorff"):
    try:
        importlib.import_module(module)
    except Exception as e:  # any failure to import is what this script reports
        missing.append(f"{module}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
if missing:
    sys.exit("error: cannot import " + "; ".join(missing) + " -- add the missing wheel to scripts/gpu_wheels.sh")
versions = {m: importlib.import_module(m).__version__ for m in ("torch", "transformers", "trl", "peft", "accelerate",
                                                                "datasets", "bitsandbytes", "pyarrow", "fsspec")}
print("device packages:", ", ".join(f"{k} {v}" for k, v in versions.items()))
EOF
