"""What a stopped RL run returns (PPO, GRPO, RLOO, DPO): after a stop alert of the monitors
(:class:`rlhfkit.monitors.HealthMonitor`), the average of the last healthy checkpoints' trainable weights is loaded
into the trainer's model, which the run then saves as ``model/``; a stop before any healthy checkpoint returns the
starting policy instead. The metrics say which steps and why.

**Do no harm** (``MonitorConfig.no_harm_reward``): the model so chosen, stopped or finished, is then compared with
the starting policy by a reward model RL did not optimise (:func:`check_no_harm`), paired per prompt, and the
starting policy is returned unless the RL model is not worse by the margin (:func:`no_harm_verdict`)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhfkit.core.errors import ConfigError
from rlhfkit.models.loading import MODEL_SUBDIR, copy_model, load_policy, save_final
from rlhfkit.monitors import HealthMonitor
from rlhfkit.monitors.config import MonitorConfig
from rlhfkit.monitors.frozen import frozen_models
from rlhfkit.monitors.health import build_monitors
from rlhfkit.monitors.progress import show_progress
from rlhfkit.rl.ppo.checkpoint import load_trainable
from rlhfkit.rl.ppo.trainer import PPOTrainer
from rlhfkit.runs import RunResult, eval_metrics, resume_and_train, run_result

logger = logging.getLogger(__name__)


def return_healthy(trainer, health: HealthMonitor) -> dict[str, Any]:
    """After a stop alert, load the average of the monitor's last healthy checkpoints (:func:`load_average`, those of
    its ``averaged_steps`` still on disk) into the trainer's model, so that it is what gets saved as ``model/``.
    Returns the RL metrics that say what was returned: ``monitor_alerts``, ``stop_step``, ``last_healthy_step``,
    ``returned_step`` (the newest step in ``model/``: 0 is the starting policy, when the stop came before any healthy
    checkpoint -- :func:`returns_start` -- and the caller saves it with :func:`save_starting_policy`),
    ``averaged_steps`` (the checkpoints averaged; [] without a stop) and ``returned_reason``."""
    returned = health.returned_step if health.stop_step is not None else None
    averaged = []
    if returned:
        # DeepSpeed ZeRO-3 gives each process a partition of every weight: nothing to average there
        zero3 = any(hasattr(p, "ds_id") for p in trainer.model.parameters())
        averaged = health.settle_average(trainer.args.output_dir, newest_only=zero3) or [returned]
        load_average(trainer, [Path(trainer.args.output_dir) / f"checkpoint-{s}" for s in averaged])
    if returned is not None:
        logger.warning("monitor: %s", health.returned_reason)
    reason = health.returned_reason if health.stop_step is not None else "no stop alert: the final weights"
    return {
        "monitor_alerts": len(health.alerts),
        "stop_step": health.stop_step,
        "last_healthy_step": health.last_healthy_step,
        "returned_step": returned if returned is not None else trainer.state.global_step,
        "averaged_steps": averaged,
        "returned_reason": reason,
    }


def no_harm_verdict(candidate: Sequence[float], start: Sequence[float], margin: float) -> dict[str, Any]:
    """Whether to keep the RL model: ``candidate[i]`` and ``start[i]`` are a held-out reward model's scores of the
    RL model's and the starting policy's answers to prompt ``i``. With ``d = candidate - start``, the model is kept
    when ``mean(d) / se(d) > margin`` (``se``: the standard error of the mean, sample std / sqrt(n)); a negative
    margin keeps a model within noise of the start, a positive one asks for a measurable gain. Returns ``keep``,
    ``mean_diff``, ``se``, ``z``, ``n``, ``margin``."""
    d = np.asarray(candidate, dtype=float) - np.asarray(start, dtype=float)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"no_harm_verdict needs two paired score lists of the same length >= 2, got {d.shape}")
    mean, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    z = mean / se if se > 0 else (math.inf if mean > 0 else -math.inf if mean < 0 else 0.0)
    return {"keep": bool(z > margin), "mean_diff": mean, "se": se, "z": z, "n": len(d), "margin": margin}


def check_prompts(trainer, n: int) -> list:
    """The last ``n`` prompts of the trainer's training set (strings or chat messages; PPO's token ids decoded)."""
    data = trainer.train_dataset
    rows = [data[i] for i in range(max(0, len(data) - n), len(data))]
    if rows and "prompt" in rows[0]:
        return [r["prompt"] for r in rows]
    return [trainer.processing_class.decode(r["input_ids"], skip_special_tokens=True) for r in rows]


def check_no_harm(model_dir, start_model, config: MonitorConfig, prompts: list, max_new_tokens: int, seed: int):
    """Sample one answer per prompt from the RL model (``model_dir``) and the starting policy, score both with
    ``config.no_harm_reward`` and return :func:`no_harm_verdict` with ``config.no_harm_margin``."""
    from rlhfkit.models.scoring import load_reward_function, sample_responses

    reward = load_reward_function(config.no_harm_reward)
    scores = {}
    for name, model in (("candidate", model_dir), ("start", start_model)):
        texts = sample_responses(str(model), prompts, max_new_tokens, seed)
        scores[name] = reward(prompts, texts)
    return no_harm_verdict(scores["candidate"], scores["start"], config.no_harm_margin)


def apply_no_harm(trainer, metrics: dict[str, Any], model_dir: Path, start_model, config: MonitorConfig) -> Path:
    """The do-no-harm check on the saved RL model, on the main process (the others wait; their metrics do not carry
    the verdict): when the check refuses it, the starting policy is copied to ``model_dir`` instead and
    ``returned_step`` becomes 0. ``metrics`` gets ``no_harm`` (the verdict, or None without ``no_harm_reward``) and
    ``returned_reason`` says what was decided. Returns the returned model's folder (``model_dir``)."""
    metrics["no_harm"] = None
    if config.no_harm_reward is None or returns_start(metrics):
        return model_dir
    if trainer.accelerator.is_main_process:
        args = trainer.args
        length = getattr(args, "response_length", None) or getattr(args, "max_completion_length", None) or 128
        prompts = check_prompts(trainer, config.no_harm_prompts)
        verdict = check_no_harm(model_dir, start_model, config, prompts, length, args.seed)
        metrics["no_harm"] = verdict
        judged = (
            f"the do-no-harm check ({config.no_harm_reward}, held out of RL, on {verdict['n']} prompts) found the RL "
            f"model's mean advantage over the starting policy {verdict['mean_diff']:+.3f} "
            f"({verdict['z']:+.1f} standard errors, margin {config.no_harm_margin:+g})"
        )
        if verdict["keep"]:
            metrics["returned_reason"] = f"{metrics['returned_reason']}; {judged}: kept."
        else:
            metrics["returned_reason"] = (
                f"{metrics['returned_reason']}; {judged}: the RL stage returns the starting policy (step 0) instead."
            )
            metrics["returned_step"] = 0
            logger.warning("monitor: %s", metrics["returned_reason"])
            copy_model(start_model, model_dir)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def _load_checkpoint(trainer, checkpoint: Path) -> None:
    if isinstance(trainer, PPOTrainer):
        load_trainable(trainer.model, str(checkpoint), trainer.accelerator.device)
    else:
        trainer._load_from_checkpoint(str(checkpoint))


def load_average(trainer, checkpoints: list[Path]) -> None:
    """Load the uniform average of the trainable weights of ``checkpoints`` into the trainer's model: each is loaded
    as the trainer resumes it, its trainable tensors are summed in float32 on the CPU, and the mean is written back
    in the parameters' dtype (the frozen weights, e.g. a 4-bit base under QLoRA, are the same in every checkpoint).
    One checkpoint is simply loaded."""

    def trainable():  # looked up after each load: a loader may replace a module
        return [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]

    sums: dict[str, torch.Tensor] = {}
    for checkpoint in checkpoints:
        _load_checkpoint(trainer, checkpoint)
        if len(checkpoints) > 1:
            for name, param in trainable():
                value = param.detach().to("cpu", torch.float32)
                sums[name] = sums[name] + value if name in sums else value.clone()
    with torch.no_grad():
        for name, param in trainable() if sums else []:
            param.copy_((sums[name] / len(checkpoints)).to(param.device, param.dtype))


def load_start_policy(
    name: str, model_name_or_path, method, *, reference_model=None, start_adapter=None, trust_remote_code: bool = False
):
    """The policy an RL run starts from and the ``peft_config`` to give its TRL trainer: ``model_name_or_path``, with
    a trained LoRA ``start_adapter`` loaded trainable on it (iterative RLHF under LoRA: the SFT model plus round r-1's
    adapter, the reference the adapter turned off) -- then no new adapter (``None``), else ``method.lora``.
    ``reference_model`` (a frozen reference apart from the start) needs preset full; ``start_adapter`` a LoRA preset:
    each refused with one line naming ``run_<name>``. Returns ``(model, tokenizer, peft_config)``."""
    if reference_model is not None and method.lora is not None:
        raise ConfigError(
            f"run_{name}: reference_model={str(reference_model)!r} with a LoRA preset: the reference of a LoRA policy "
            "is its own start (the adapter turned off); use preset full, or start_adapter to continue an adapter"
        )
    if start_adapter is not None and method.lora is None:
        raise ConfigError(f"run_{name}: start_adapter={str(start_adapter)!r} needs preset lora or qlora")
    model, tokenizer = load_policy(
        model_name_or_path, method, trust_remote_code=trust_remote_code, adapter=start_adapter
    )
    return model, tokenizer, method.lora if start_adapter is None else None


def returns_start(metrics: dict[str, Any]) -> bool:
    """Whether :func:`return_healthy` chose the starting policy (a stop before any healthy checkpoint)."""
    return metrics.get("stop_step") is not None and metrics.get("returned_step") == 0


def save_starting_policy(trainer, model_name_or_path: str | os.PathLike, output_dir) -> Path:
    """Write the policy RL started from (``model_name_or_path``, as saved) to ``<output_dir>/model`` atomically
    (:func:`rlhfkit.models.loading.copy_model`): what a stop returns when no healthy checkpoint exists yet (main
    process only; the others wait)."""
    out = Path(output_dir) / MODEL_SUBDIR
    if trainer.accelerator.is_main_process:
        copy_model(model_name_or_path, out)
    trainer.accelerator.wait_for_everyone()
    return out


def train_monitored(
    trainer, tokenizer, config, name: str, base_model: str, monitor_config, eval_dataset=None, start_model=None
) -> RunResult:
    """Add the monitors (:func:`rlhfkit.monitors.build_monitors`), train (resuming), save -- after a stop alert the
    average of the last healthy checkpoints (:func:`return_healthy`, whose metrics the result carries).

    ``base_model``: what a LoRA adapter is merged into, and the starting policy; ``start_model``: the starting policy
    when it is not ``base_model`` (a trained adapter trained further: ``base_model`` plus that adapter, saved)."""
    frozen, frozen_exclude = frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config or MonitorConfig(), frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    show_progress(trainer, name, health)
    metrics = eval_metrics(trainer, eval_dataset, "_before")
    metrics.update(resume_and_train(trainer, config, name))
    metrics.update(return_healthy(trainer, health))
    metrics.update(eval_metrics(trainer, eval_dataset))
    start = start_model or base_model
    if returns_start(metrics):
        model_dir = save_starting_policy(trainer, start, config.output_dir)
    else:
        model_dir = save_final(trainer, tokenizer, config.output_dir, base_model=base_model, model_kind="causal")
    model_dir = apply_no_harm(trainer, metrics, model_dir, start, monitor_config or MonitorConfig())
    return run_result(trainer, name, model_dir, metrics)


def frozen_check_targets(trainer) -> tuple[dict, dict]:
    """The monitors' frozen models and the parameters to skip in them, for :func:`rlhfkit.monitors.build_monitors`.

    On the CPU, bitsandbytes repacks 4-bit weights in place (same values, another layout) on their first forward
    and back whenever a checkpoint is saved, so their bytes change without training; they are skipped there. They
    cannot be trained anyway (packed integers without gradients); the model's other parameters are still checked.
    """
    import re

    models, exclude = frozen_models(trainer)
    if trainer.accelerator.device.type == "cpu":
        for label, module in models.items():
            packed = [f"^{re.escape(n)}$" for n, p in module.named_parameters() if hasattr(p, "quant_state")]
            exclude[label] = (*exclude.get(label, ()), *packed)
    return models, exclude
