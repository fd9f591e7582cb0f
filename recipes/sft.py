"""Step 1 of InstructGPT: supervised fine-tuning on demonstrations.

    accelerate launch recipes/sft.py --config configs/lab/sft.yaml
    accelerate launch --config_file configs/accelerate/single_gpu.yaml recipes/sft.py \
        --config configs/qwen2.5-0.5b-instruct/sft.yaml

Any SFTConfig field can be overridden on the command line (`--learning_rate 1e-4`). Data rows are
prompt/completion (loss on the completion only), messages (chat) or text; `dataset: lab` uses the
built-in lab's demonstrations. With a LoRA preset, the adapter is merged into `output_dir/model`, which
the reward and RL stages load like any checkpoint (see rlhfkit.train).
"""

import json
import logging
import sys

from trl import SFTConfig

from rlhfkit.core.arguments import DataArguments, ModelArguments, resolve_model
from rlhfkit.data.tables import load_sft_data
from rlhfkit.pipeline.validate import run_recipe
from rlhfkit.sft import run_sft

logger = logging.getLogger(__name__)


def main(model_args: ModelArguments, data_args: DataArguments, training_args: SFTConfig) -> dict:
    # ---------------------------------------------------------------- data
    train, held_out = load_sft_data(data_args, seed=training_args.seed)
    logger.info("SFT data: %d train rows, %d held out", len(train), 0 if held_out is None else len(held_out))

    # ---------------------------------------------------------------- model + training
    result = run_sft(
        resolve_model(model_args.model_name_or_path),
        train,
        training_args,
        eval_dataset=held_out,
        preset=model_args.preset,
        trust_remote_code=training_args.trust_remote_code,
    )

    # ---------------------------------------------------------------- report
    if training_args.process_index == 0:
        print(json.dumps({"model_dir": str(result.model_dir), **result.metrics}, indent=2, default=str))
    return result.metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(run_recipe(main, "sft", (ModelArguments, DataArguments, SFTConfig)))
