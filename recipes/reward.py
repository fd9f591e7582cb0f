"""Step 2 of InstructGPT: a reward model trained on preference pairs, evaluated and gated before RL.

    accelerate launch recipes/reward.py --config configs/lab/reward.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/reward.py \
        --config configs/qwen2.5-0.5b-instruct/reward.yaml

The model starts from the SFT checkpoint with a new one-output head (InstructGPT). Data: any format
rlhfkit.data reads (HH-RLHF transcripts, prompt/chosen/rejected columns, K-wise rankings, scored
completions, per-labeler votes), detected from the columns or set with `dataset_format`. After training,
the held-out pairs are scored by rlhfkit.reward.evaluate (accuracy, AUC, calibration, length bias) and the gate
says whether the model is strong enough to steer RL; the report lands in `output_dir/eval/`.

Unlike the other recipes, this one leaves the trainer to rlhfkit.reward.trainer.run_reward: with `ensemble_size > 1`
it trains K members (their own seeds, optionally bootstrap resamples) and writes the ensemble, a loop that belongs to
the library; with one member it builds RewardTrainer (TRL's, plus the K-wise ranking loss) and trains and saves it as
recipes/sft.py does SFTTrainer.
"""

import json
import logging
import sys
from dataclasses import dataclass, field

from accelerate import PartialState

from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.data.tables import load_preference_data
from rlhfkit.models.scoring import load_scorer
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.reward.config import RewardConfig  # trl.RewardConfig + group_rankings (K-wise loss), ensemble_size
from rlhfkit.reward.evaluate import evaluate_ensemble, evaluate_reward_model
from rlhfkit.reward.gate import rm_gate
from rlhfkit.reward.report import write_report
from rlhfkit.reward.trainer import run_reward

logger = logging.getLogger(__name__)


@dataclass
class GateArguments:
    """Which pairs train the reward model, and the accuracy it needs to steer RL."""

    min_agreement: float = field(default=0.0, metadata={"help": "Drop voted pairs below this labeler agreement."})
    min_accuracy: float = field(default=0.60, metadata={"help": "Gate: held-out accuracy needed to go on to RL."})


def main(model_args: ModelArguments, data_args: DataArguments, gate_args: GateArguments, training_args: RewardConfig):
    # ---------------------------------------------------------------- data
    train, held_out = load_preference_data(data_args, seed=training_args.seed, min_agreement=gate_args.min_agreement)
    logger.info("preference pairs: %d train, %d held out", len(train), 0 if held_out is None else len(held_out))

    # ---------------------------------------------------------------- model + trainer + train + save
    # The SFT model with a new one-output head; output_dir/model (merged under LoRA), or the ensemble's folder.
    result = run_reward(
        resolve_model(model_args.model_name_or_path),
        train,
        training_args,
        eval_dataset=held_out,
        preset=model_args.preset,
        trust_remote_code=training_args.trust_remote_code,
    )

    # ---------------------------------------------------------------- evaluate + gate
    # Scored as RL will score it (rlhfkit.models.scoring: 4-bit under qlora, on the GPU if any, truncated as trained).
    if held_out is not None and PartialState().is_main_process:
        model, tokenizer = load_scorer(result.model_dir, model_args.preset)
        if tokenizer is None:  # an ensemble (ensemble_size > 1): judged on its members' mean standardised score
            report = evaluate_ensemble(model, held_out, max_length=training_args.max_length).ensemble
        else:
            report = evaluate_reward_model(
                model, tokenizer, held_out, max_length=training_args.max_length, device=model.device
            )
        verdict = rm_gate(report, min_accuracy=gate_args.min_accuracy)
        write_report(report, f"{training_args.output_dir}/eval", verdict=verdict)
        print(json.dumps({"model_dir": str(result.model_dir), "accuracy": report.accuracy, "auc": report.auc}))
        print(f"gate: {verdict.summary}")
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "reward", (ModelArguments, DataArguments, GateArguments, RewardConfig)))
