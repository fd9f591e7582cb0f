"""Memory planner: will a model x trainer x preset fit on a GPU, and if not, what change makes it fit?

``plan("Qwen/Qwen2.5-1.5B-Instruct", "ppo", "qlora", 12)`` returns a :class:`Plan`: a breakdown in bytes
(weights of every model copy the trainer holds, LoRA adapters, gradients, optimiser state, activations with
and without gradient checkpointing, logits, generation KV cache, CUDA overhead), a verdict (``fits`` /
``tight`` / ``does not fit``) and, when it does not fit, concrete changes, each re-planned to check it fits.
Nothing here imports torch or touches the network.

* :mod:`rlhfkit.planner.dims` -- :class:`ModelDims` from a local ``config.json``, the Hugging Face cache, or
  :data:`KNOWN_MODELS` (an offline table of real config values); the exact parameter count;
* :mod:`rlhfkit.planner.memory` -- the byte formulas, with their sources, assumptions and what is not validated;
* :mod:`rlhfkit.planner.plans` -- :func:`plan` -> :class:`Plan` and its :class:`Suggestion` changes;
* :mod:`rlhfkit.planner.fit` -- :func:`fit_table` (docs/memory.md's "what fits where") and config files planned on
  their GPU (:func:`check_config_fits`, :func:`check_pipeline_fits`, :func:`plan_config`).

The planner plans a training run's *trainer* (sft, reward, ppo, grpo); the command line (``rlhfkit plan --stage``),
the ``stage`` key of a plan's JSON and a recipe config's ``stage:`` key keep the older word.
"""

from rlhfkit.planner.dims import KNOWN_MODELS, ModelDims, model_dims
from rlhfkit.planner.fit import (
    FitRow,
    check_config_fits,
    check_pipeline_fits,
    fit_table,
    fit_table_markdown,
    plan_config,
)
from rlhfkit.planner.memory import GIB, activation_bytes, gib, kv_cache_bytes, logits_bytes, weight_bytes
from rlhfkit.planner.plans import Plan, Suggestion, plan

__all__ = [
    "GIB",
    "KNOWN_MODELS",
    "ModelDims",
    "Plan",
    "Suggestion",
    "FitRow",
    "model_dims",
    "plan",
    "fit_table",
    "fit_table_markdown",
    "check_config_fits",
    "check_pipeline_fits",
    "plan_config",
    "weight_bytes",
    "activation_bytes",
    "logits_bytes",
    "kv_cache_bytes",
    "gib",
]
