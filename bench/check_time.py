"""Wall time of ``rlhfkit run --check`` (every value, data source, model folder and TRL config checked, no weights
loaded), side by side with what it cannot avoid: starting Python and importing torch, which TRL's configs need.

    python bench/check_time.py [--repeats 5] [--config configs/lab/pipeline.yaml]

Goal: the check stays under 5 s on the demo config without patching any dependency (TRL's config classes are imported
as TRL ships them: that pulls in peft and bitsandbytes, which transformers' ``trainer_utils`` imports, and
``modeling_utils``, which ``TrainingArguments.__post_init__``'s Kubeflow check imports). Each command runs
``--repeats`` times in a fresh interpreter, alternating; the
median is printed with its ratio to the torch-import floor.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--config", default="configs/lab/pipeline.yaml")
    args = ap.parse_args()
    commands = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "rlhfkit demo --check": [sys.executable, "-m", "rlhfkit.cli", "demo", "--check"],
        f"rlhfkit run {args.config} --check": [sys.executable, "-m", "rlhfkit.cli", "run", args.config, "--check"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd))
    floor = statistics.median(times["python -c 'import torch'"])
    for name, ts in times.items():
        median = statistics.median(ts)
        spread = f"(min {min(ts):.2f}, max {max(ts):.2f})"
        print(f"{name:45s} median {median:5.2f} s  {spread}  {median / floor:4.2f}x torch")


if __name__ == "__main__":
    main()
