"""An alternative to RL: DPO on the preference pairs, starting from the SFT model (no reward model, no sampling).

    accelerate launch recipes/dpo.py --config configs/lab/dpo.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/dpo.py \
        --config configs/qwen2.5-0.5b-instruct/dpo.yaml

TRL's DPOTrainer fits the policy to the pairs with the reward model's own loss, the reward being the policy's
*implicit* reward `beta * log(pi / pi_ref)`; the reference is the SFT model (with LoRA: the policy with its adapter
off). `beta` is the leash: higher = closer to the SFT model. rlhfkit's DPOTrainer also samples the policy at every log
and logs its KL to the reference (`objective/kl`, nats per sequence: the same quantity PPO logs), which the monitors
read with the reward margins, entropy and length (rlhfkit.monitors; any MonitorConfig field can be set here).

Data: the same preference formats as recipes/reward.py (`dataset: lab` uses the lab's simulated labelers, filtered
by `min_agreement`). After training, the held-out pairs are scored with the policy's implicit reward and reported
like a reward model (accuracy, AUC, calibration, length bias) in `output_dir/implicit_reward/`.
Deliberately left out: DPO variants (IPO, hinge, ... are TRL's `loss_type`), and sampling-based evaluation (see
`rlhfkit compare`).
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.data.tables import load_preference_data
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.reward.report import write_report
from rlhfkit.rl.configs import DPOConfig
from rlhfkit.rl.dpo import evaluate_implicit_reward, run_dpo

logger = logging.getLogger(__name__)


@dataclass
class PairArguments:
    """Which preference pairs DPO trains on (the same filter as recipes/reward.py)."""

    min_agreement: float = field(default=0.0, metadata={"help": "Drop voted pairs below this labeler agreement."})


def main(model_args, data_args, pair_args, monitor_config, training_args: DPOConfig) -> dict:
    # ---------------------------------------------------------------- data
    train, held_out = load_preference_data(data_args, seed=training_args.seed, min_agreement=pair_args.min_agreement)
    logger.info("preference pairs: %d train, %d held out", len(train), 0 if held_out is None else len(held_out))

    # ---------------------------------------------------------------- model + training
    sft_model = resolve_model(model_args.model_name_or_path)
    result = run_dpo(
        sft_model,
        train,
        training_args,
        preset=model_args.preset,
        trust_remote_code=training_args.trust_remote_code,
        monitor_config=monitor_config,
    )

    # ---------------------------------------------------------------- the implicit reward, reported as an RM is
    if held_out is not None and training_args.process_index == 0:
        report = evaluate_implicit_reward(
            result.model_dir,
            sft_model,
            held_out.to_list(),
            beta=training_args.beta,
            max_length=training_args.max_length,
            preset=model_args.preset,
        )
        write_report(report, f"{training_args.output_dir}/implicit_reward")
        last = next((h for h in reversed(result.log_history) if "objective/kl" in h), {})
        summary = {"implicit_reward_accuracy": report.accuracy, "auc": report.auc, "kl": last.get("objective/kl")}
        print(json.dumps({"model_dir": str(result.model_dir), **summary, **result.metrics}, indent=2, default=str))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "dpo", (ModelArguments, DataArguments, PairArguments, MonitorConfig, DPOConfig)))
