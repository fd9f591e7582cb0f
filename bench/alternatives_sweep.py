"""Why the demo's RLOO, DPO and best-of-N settings: a small grid per algorithm on the demo's SFT and reward model.

    rlhfkit demo --until rm_eval                       # the shared stages (runs/demo), or any finished demo run
    python bench/alternatives_sweep.py                 # every setting below, measured as `rlhfkit compare` does
    python bench/alternatives_sweep.py --only dpo      # one algorithm

Each setting runs as `rlhfkit compare` runs an algorithm (rlhfkit.pipeline.compare.run_algorithm: the demo's config
with the setting's keys overridden, its own resumable folder under ``<base>/sweep/``, the shared stages reused) and is
judged by the same final evaluation: gold and reward-model score of the final policy on the held-out prompts (300, or
``--eval-prompts``; ``--seed`` for a base run made with ``--set seed=S``), its gold gain over the SFT policy paired
prompt by prompt ± its standard error, and its KL to the SFT policy (nats per sequence) on those samples. The table
prints the SFT policy's numbers first; a rerun only evaluates what is missing. Settings vary the leash (beta, rounds)
and the step size, one at a time.
"""

from __future__ import annotations

import argparse
import json
from importlib.resources import files
from pathlib import Path

import yaml

from rlhfkit.pipeline.compare import run_algorithm
from rlhfkit.pipeline.config import load_config
from rlhfkit.pipeline.manifest import Manifest

GRID: dict[str, list[dict]] = {
    "rloo": [
        {},  # the demo's: beta 0.1 (per nat of sequence KL, rewards in reward-model standard deviations), lr 5e-4
        {"rloo.beta": 0.02},  # a looser leash
        {"rloo.beta": 0.3},  # a tighter one
    ],
    "dpo": [
        {},  # the demo's: beta 0.5, lr 5e-5, 100 steps
        {"dpo.beta": 0.1},  # a looser leash
        {"dpo.beta": 0.1, "dpo.learning_rate": 2.0e-4},  # larger steps
        {"dpo.beta": 0.1, "dpo.learning_rate": 1.0e-4},
        {"dpo.beta": 0.1, "dpo.max_steps": 200},  # two passes over the pairs
        {"dpo.beta": 0.05},
        {"dpo.loss_type": ["sigmoid", "sft"]},  # DPO + the chosen responses' NLL (RPO, Pang et al. 2024)
    ],
    "best_of_n": [
        {},  # the demo's: 1 round of N = 4
        {"best_of_n.rounds": 2},
        {"best_of_n.rounds": 3},
        {"best_of_n.rounds": 3, "best_of_n.num_samples": 8},
        {"best_of_n.num_samples": 8},
    ],
}


def _tag(setting: dict) -> str:
    def value(v):
        return "+".join(map(str, v)) if isinstance(v, list) else v

    return "demo" if not setting else "_".join(f"{k.split('.')[-1]}={value(v)}" for k, v in setting.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="runs/demo", help="output_dir of the demo run whose stages are shared")
    parser.add_argument("--only", choices=list(GRID), help="one algorithm")
    parser.add_argument("--seed", type=int, default=0, help="the base run's seed (`rlhfkit compare --set seed=S`)")
    parser.add_argument("--eval-prompts", type=int, default=300, help="held-out prompts of the final evaluation")
    args = parser.parse_args()
    base_dir = Path(args.base)
    base = Manifest(base_dir)
    if base.stage("rm_eval").get("status") != "done":
        raise SystemExit(f"{base_dir}: run `rlhfkit demo --out {base_dir} --until rm_eval` first")
    demo = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())
    rows = []
    for algorithm, settings in GRID.items():
        if args.only and algorithm != args.only:
            continue
        for setting in settings:  # the demo's own setting is read from `rlhfkit compare demo`'s folder when there
            out = base_dir / algorithm if not setting else base_dir / "sweep" / f"{algorithm}-{_tag(setting)}"
            overrides = {"output_dir": str(out), "rl.algorithm": algorithm, "rl.eval_temperature": 1.0,
                         "rl.max_new_tokens": 24, "seed": args.seed, "rl.eval_prompts": args.eval_prompts,
                         **setting}  # fmt: skip
            record = run_algorithm(load_config(json.loads(json.dumps(demo)), overrides), base, print)
            rows.append((algorithm, _tag(setting), record))
    sft = rows[0][2] if rows else None
    print(f"\nSFT policy: gold {sft['gold_sft']:.3f}, reward-model score {sft['proxy_sft']:.3f}\n")
    print("| algorithm | setting | gold | gold gain ± SE | reward-model score | KL to SFT (nats/seq) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for algorithm, tag, r in rows:
        wall = "—" if r.get("wall_s") is None else f"{r['wall_s']:.0f}"
        kl = f"{r['kl']:.2f} ± {r['kl_sem']:.2f}"
        gain = "—" if r.get("gold_gain_sem") is None else f"{r['gold_gain']:+.3f} ± {r['gold_gain_sem']:.3f}"
        print(f"| {algorithm} | {tag} | {r['gold']:.3f} | {gain} | {r['proxy']:.3f} | {kl} | {wall} |")


if __name__ == "__main__":
    main()
