"""The do-no-harm check (``rlhfkit.rl.healthy.no_harm_verdict``) measured on the over-optimisation grid: which
returned models it would refuse, by which held-out reward model, against their held-out gold.

    python bench/no_harm.py --grid GRID --runs s0,s1@1 [--setting '{"kl_limit": 0.12}']

Per finished cell of the runs (``bench/overoptimization.py`` records), the candidates are the model the stopped run
returns under the monitor setting (rebuilt from the warn-only twin) and the twin's final model; each is compared
with the SFT policy on the check prompts, paired per prompt, by two reward models RL did not optimise:

* ``member``: the grid's validation member (the reward ensemble's extra member, trained on the same length-biased
  labels as the RL members);
* ``independent``: a reward model trained from the same SFT model on other labelers' pairs (the lab's pool without
  length bias, another seed): what a user holds when a second, independent set of labels exists.

Printed per candidate: its held-out gold minus the SFT policy's (the truth the check cannot see) and each signal's z
(mean paired difference / its standard error). Cached beside the grid's scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: bench.* from the repo root

from bench import overoptimization as grid
from bench.monitor_replay import cells
from bench.overopt_protocol import parse_split


def independent_rm(root: Path, sft_dir: Path, seed: int, steps: int) -> Path:
    """A reward model from unbiased labelers' pairs (another seed), cached in ``<root>/rm-independent``."""
    from rlhfkit.core.arguments import trainer_config
    from rlhfkit.reward.config import RewardConfig
    from rlhfkit.reward.trainer import run_reward

    out = root / "rm-independent"
    if not (out / "model" / "model.safetensors").exists():
        train = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in grid.preferences(0.0, seed + 100).train]
        cfg = trainer_config(RewardConfig, "reward", out, max_steps=steps, per_device_train_batch_size=32,
                             learning_rate=1e-3, seed=seed + 100, **grid.COMMON)  # fmt: skip
        run_reward(sft_dir, train, cfg)
    return out / "model"


def independent_scores(model_dir: Path, rm_dir: Path, cache: Path, seed: int, n: int) -> list[float]:
    from rlhfkit import lab
    from rlhfkit.models.scoring import load_reward_function, sample_responses

    if cache.exists():
        return json.loads(cache.read_text())
    prompts = lab.make_prompts(n, seed=20_000 + seed)  # the check prompts of bench/overoptimization.check_scores
    texts = sample_responses(str(model_dir), prompts, grid.RESPONSE_LENGTH, seed)
    scores = load_reward_function(rm_dir)(prompts, texts)
    cache.write_text(json.dumps(scores) + "\n")
    return scores


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", required=True)
    p.add_argument("--runs", default="s0,s1@1", help="runs as in a --split group (s0,s1@1)")
    p.add_argument("--setting", default="{}", help="MonitorConfig fields of the stopped run")
    p.add_argument("--rm-steps", type=int, default=800)
    p.add_argument("--eval-prompts", type=int, default=grid.EVAL_PROMPTS)
    p.add_argument("--check-prompts", type=int, default=grid.CHECK_PROMPTS)
    args = p.parse_args(argv)
    from rlhfkit.monitors import MonitorConfig
    from rlhfkit.rl.healthy import no_harm_verdict

    config = MonitorConfig(health_plots=False, **json.loads(args.setting))
    rows = []
    for cell in cells(args.grid, parse_split(f"runs={args.runs}")["runs"]):
        rec = json.loads((cell / "record.json").read_text())
        root, seed = cell.parent.parent, rec["seed"]
        sft_dir, rm_dir = root / "sft" / "model", cell.parent / f"rm-bias{rec['length_bias']:g}" / "model-rl"
        independent = independent_rm(root, sft_dir, seed, args.rm_steps)
        sft = grid.scored(sft_dir, cell.parent / "sft-scored.json", seed, rm_dir, args)
        sft_ind = independent_scores(sft_dir, independent, root / "sft-independent.json", seed, args.check_prompts)
        steps = grid.stopped_from_twin(grid.load_timeline(cell / "unstopped"), config)["averaged_steps"]
        final = Path(json.loads((cell / "unstopped" / "result.json").read_text())["model_dir"])
        candidates = {"final": (final, cell / "unstopped" / "final-scored.json")}
        if steps:
            model = grid.rebuild_returned(cell / "unstopped", sft_dir, steps)
            candidates["returned"] = (model, model / "scored.json")
        for name, (model, cache) in candidates.items():
            mine = grid.scored(model, cache, seed, rm_dir, args)
            ind = independent_scores(model, independent, cache.with_name(cache.stem + "-independent.json"), seed,
                                     args.check_prompts)  # fmt: skip
            row = {k: rec[k] for k in ("algorithm", "length_bias", "seed", "threads", "reward")}
            row.update(candidate=name, steps=steps if name == "returned" else None,
                       gold_minus_sft=mine["gold"] - sft["gold"],
                       z_member=no_harm_verdict(mine["check"], sft["check"], 0.0)["z"],
                       z_independent=no_harm_verdict(ind, sft_ind, 0.0)["z"])  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
