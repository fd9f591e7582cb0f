"""Step 1 of InstructGPT: supervised fine-tuning on demonstrations.

    accelerate launch recipes/sft.py --config configs/lab/sft.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/sft.py \
        --config configs/qwen2.5-0.5b-instruct/sft.yaml

TRL's SFTTrainer; any SFTConfig field can be overridden on the command line (`--learning_rate 1e-4`). Data rows are
prompt/completion (loss on the completion only), messages (chat) or text; `dataset: lab` uses the built-in lab's
demonstrations. The held-out rows' loss is measured before and after training. With a LoRA preset, the adapter is
merged into `output_dir/model`, which the reward and RL stages load like any checkpoint. This script builds the same
trainer as rlhfkit.sft.run_sft, step by step.
"""

import json
import logging
import sys

from accelerate import PartialState
from trl import SFTConfig, SFTTrainer

from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.core.presets import method_preset
from rlhfkit.data.tables import load_sft_data
from rlhfkit.models.loading import load_policy
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.runs import train_and_save

logger = logging.getLogger(__name__)


def main(model_args: ModelArguments, data_args: DataArguments, training_args: SFTConfig) -> dict:
    # ---------------------------------------------------------------- data
    train, held_out = load_sft_data(data_args, seed=training_args.seed)
    logger.info("SFT data: %d train rows, %d held out", len(train), 0 if held_out is None else len(held_out))

    # ---------------------------------------------------------------- model (with LoRA, TRL adds the adapter)
    base_model = resolve_model(model_args.model_name_or_path)
    method = method_preset(model_args.preset)
    model, tokenizer = load_policy(base_model, method, trust_remote_code=training_args.trust_remote_code)

    # ---------------------------------------------------------------- trainer
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=method.lora,
    )

    # ---------------------------------------------------------------- train + evaluate + save
    # Held-out loss before and after, resuming from the newest checkpoint-N; output_dir/model (merged under LoRA).
    result = train_and_save(trainer, tokenizer, training_args, "sft", base_model, "causal", held_out)

    # ---------------------------------------------------------------- report
    if PartialState().is_main_process:
        print(json.dumps({"model_dir": str(result.model_dir), **result.metrics}, indent=2, default=str))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "sft", (ModelArguments, DataArguments, SFTConfig)))
