"""The pipeline's stages. Each takes a :class:`~rlhfkit.pipeline.context.StageContext` and returns
``(outputs, metrics)``: paths it wrote and the numbers the report shows. Stages read only their
predecessors' recorded outputs, so any stage can be rerun on its own.

They call the same functions the recipes call: :mod:`rlhfkit.data.tables` for data, :mod:`rlhfkit.train` for
the training runs, :mod:`rlhfkit.scoring` and :mod:`rlhfkit.rm_eval` for evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit import lab
from rlhfkit.config import DataArguments, resolve_model
from rlhfkit.data.preferences import detect_format, load_preferences
from rlhfkit.data.tables import LAB, lab_preferences, load_prompts, load_sft_data, preference_source, split_eval
from rlhfkit.data.votes import agreement_summary
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.io import read_jsonl, write_json, write_jsonl
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.context import GateFailed, StageContext
from rlhfkit.rm_eval import evaluate_reward_model, rm_gate, write_report
from rlhfkit.scoring import load_scorer, sample_responses, score_texts
from rlhfkit.train import run_grpo, run_ppo, run_reward, run_sft

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ helpers
def rl_prompts(ctx: StageContext) -> tuple[list, list]:
    """``(RL prompts, held-out final-evaluation prompts)`` of the run (:func:`rlhfkit.data.tables.load_prompts`)."""
    cfg = ctx.cfg
    return load_prompts(
        cfg.data.prompts,
        split=cfg.data.split,
        seed=cfg.seed,
        n_lab=cfg.lab.rl_prompts,
        held_out=cfg.rl.eval_prompts,
        max_prompts=cfg.data.max_prompts,
    )


# ------------------------------------------------------------------------------------------ SFT
def stage_sft(ctx: StageContext) -> tuple[dict, dict]:
    cfg = ctx.cfg
    with ctx.main_process_first():  # the main process builds a lab model / downloads data once; the others reuse it
        base = resolve_model(cfg.model.model_name_or_path, cache_dir=cfg.output_dir / "base_model", seed=cfg.seed)
        data = DataArguments(
            dataset=cfg.data.sft,
            dataset_split=cfg.data.split,
            eval_fraction=cfg.data.eval_fraction,
            lab_samples=cfg.lab.demonstrations,
        )
        train, held_out = load_sft_data(data, seed=cfg.seed)
    ctx.say(f"[sft] {len(train)} demonstrations, {0 if held_out is None else len(held_out)} held out")
    result = run_sft(base, train, cfg.trainer_config("sft"), eval_dataset=held_out, preset=cfg.model.preset)
    if ctx.is_main:
        write_json(ctx.dir("sft") / "log_history.json", result.log_history)
    keep = ("eval_loss_before", "eval_loss", "train_loss", "train_runtime", "eval_mean_token_accuracy")
    metrics = {k: result.metrics[k] for k in keep if k in result.metrics}
    return {"model_dir": str(result.model_dir), "base_model": base}, metrics


# ------------------------------------------------------------------------------------------ preferences
def stage_preferences(ctx: StageContext) -> tuple[dict, dict]:
    cfg = ctx.cfg
    out_dir = ctx.dir("preferences")
    if cfg.data.preferences == LAB:
        la, ag = cfg.lab, cfg.agreement
        pool = lab.LabelerPool(la.labelers, noise=la.noise, length_bias=la.length_bias, seed=cfg.seed)
        prefs = lab_preferences(
            la.comparisons,
            pool,
            seed=cfg.seed,
            eval_comparisons=la.eval_comparisons,
            labelers_per_item=la.labelers_per_item,
            filtering=ag.enabled,
            min_agreement=ag.min_agreement,
            drop_unreliable=ag.drop_unreliable,
        )
        train, held_out, metrics = prefs.train, prefs.held_out, prefs.metrics
        ctx.say(
            f"[preferences] majority label agrees with gold: {metrics['gold_agreement_unfiltered']:.3f} unfiltered "
            f"-> {metrics['gold_agreement_filtered']:.3f} after agreement filtering ({metrics['kept_share']:.0%} kept)"
        )
    else:
        source = preference_source(cfg.data.preferences, cfg.data.split)
        loaded = _read_preferences(source, cfg)
        table, held = split_eval(loaded.to_dataset(), cfg.data.eval_fraction, cfg.seed)  # rankings stay whole
        train, held_out = table.to_list(), [] if held is None else held.to_list()
        metrics = {"n_pairs": len(train), "n_held_out": len(held_out), "data": loaded.report.summary()}
        if loaded.agreement is not None:  # per-labeler votes: the agreement report, also as agreement.json
            summary = agreement_summary(loaded)
            write_json(out_dir / "agreement.json", summary)
            keys = ("fleiss_kappa", "krippendorff_alpha", "kept", "dropped", "dropped_labelers")
            metrics.update({k: summary[k] for k in keys})
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", held_out)
    ctx.say(f"[preferences] {len(train)} training pairs, {len(held_out)} held out")
    return {"train": str(out_dir / "train.jsonl"), "eval": str(out_dir / "eval.jsonl")}, metrics


def _read_preferences(source, cfg):
    """A preference source read with ``data.preference_format`` and ``data.preference_options``; per-labeler votes
    are filtered by the ``agreement`` section (min_agreement, drop_unreliable, ties) unless ``agreement.enabled`` is
    false (then only ties are dropped or kept by margin)."""
    fmt = cfg.data.preference_format
    fmt = detect_format(source) if fmt == "auto" else fmt
    options = dict(cfg.data.preference_options or {})
    if fmt == "votes":
        ag = cfg.agreement
        filtering = {"min_agreement": ag.min_agreement, "drop_unreliable": ag.drop_unreliable} if ag.enabled else {}
        options = {**filtering, "ties": ag.ties, **options}
    try:
        return load_preferences(source, format=fmt, **options)
    except TypeError as e:  # an option the format's reader does not take
        raise ConfigError(f"data.preference_options={options!r} for format {fmt!r}: {e}") from None


# ------------------------------------------------------------------------------------------ reward model
def stage_reward(ctx: StageContext) -> tuple[dict, dict]:
    cfg, prefs = ctx.cfg, ctx.outputs["preferences"]
    train = read_jsonl(prefs["train"])
    held_out = read_jsonl(prefs["eval"]) or None
    # What the reward trainer reads: a ranking's pairs share a ``group`` (K-wise loss), a vote margin is TRL's margin.
    keep = ("prompt", "chosen", "rejected", "group", "margin")
    train = [{k: r[k] for k in keep if k in r} for r in train]
    held_out = None if held_out is None else [{k: r[k] for k in keep if k in r} for r in held_out]
    result = run_reward(
        ctx.outputs["sft"]["model_dir"],
        train,
        cfg.trainer_config("reward"),
        eval_dataset=held_out,
        preset=cfg.model.preset,
    )
    if ctx.is_main:
        write_json(ctx.dir("reward") / "log_history.json", result.log_history)
    keep = ("eval_accuracy_before", "eval_accuracy", "train_loss", "train_runtime")
    return {"model_dir": str(result.model_dir)}, {k: result.metrics[k] for k in keep if k in result.metrics}


def stage_rm_eval(ctx: StageContext) -> tuple[dict, dict]:
    cfg = ctx.cfg
    pairs = read_jsonl(ctx.outputs["preferences"]["eval"])
    if not pairs:
        raise DataError("no held-out preference pairs to evaluate the reward model on; set data.eval_fraction > 0")
    # Loaded as RL will use it (4-bit under qlora), on the GPU when there is one; truncated as it was trained.
    model, tokenizer = load_scorer(ctx.outputs["reward"]["model_dir"], cfg.model.preset)
    max_length = cfg.trainer_config("reward").max_length
    report = evaluate_reward_model(model, tokenizer, pairs, max_length=max_length, device=model.device)
    verdict = rm_gate(report, min_accuracy=cfg.gate.min_accuracy)
    write_report(report, ctx.dir("rm_eval"), verdict=verdict)
    metrics = {
        "accuracy": report.accuracy,
        "auc": report.auc,
        "ece": report.ece,
        "reward_mean": report.reward_mean,
        "reward_std": report.reward_std,
        "length_spearman": report.length_spearman,
        "gate_passed": verdict.passed,
        "gate_reasons": verdict.reasons,
    }
    ctx.say(f"[rm_eval] accuracy {report.accuracy:.3f} on {len(pairs)} held-out pairs; gate: {verdict.summary}")
    if not verdict.passed and not cfg.gate.override:
        write_json(ctx.dir("rm_eval") / "metrics.json", metrics)
        raise GateFailed(f"reward-model gate failed: {verdict.summary}; set gate.override: true to run RL anyway")
    return {"report_dir": str(ctx.dir("rm_eval"))}, metrics


# ------------------------------------------------------------------------------------------ RL
def stage_rl(ctx: StageContext) -> tuple[dict, dict]:
    cfg = ctx.cfg
    with ctx.main_process_first():
        prompts = [{"prompt": p} for p in rl_prompts(ctx)[0]]
    rm = ctx.outputs["rm_eval"]["metrics"]
    monitor = MonitorConfig(**cfg.trl["monitor"])
    lab_task = cfg.data.prompts == LAB
    if lab_task:  # log gold beside proxy so over-optimisation shows in the health timeline and the RL plot
        monitor = dataclasses.replace(monitor, health_extra_keys=[*monitor.health_extra_keys, GOLD_KEY])
    common = {
        "reward_model": ctx.outputs["reward"]["model_dir"],
        "preset": cfg.model.preset,
        "monitor_config": monitor,
        "reward_mean": rm.get("reward_mean"),
        "reward_std": rm.get("reward_std"),
    }
    sft_model = ctx.outputs["sft"]["model_dir"]
    lab_gold = lab.lab_gold  # the gold reward, logged beside the proxy and never optimised
    if cfg.rl.algorithm == "grpo":
        result = run_grpo(
            sft_model,
            prompts,
            cfg.trainer_config("grpo"),
            reward_funcs=[lab_gold] if lab_task else None,
            reward_weights=[1.0, 0.0] if lab_task else None,  # gold is logged, never optimised
            **common,
        )
    else:
        result = run_ppo(
            sft_model,
            prompts,
            cfg.trainer_config("ppo"),
            layout=cfg.rl.layout,
            metric_funcs=[lab_gold] if lab_task else None,
            **common,
        )
    log = [row for row in result.log_history if "train_runtime" not in row]
    if ctx.is_main:
        write_json(ctx.dir("rl") / "log_history.json", [_rename_gold(row) for row in log])
    kl_key = "objective/kl" if cfg.rl.algorithm == "ppo" else "kl"
    kls = [row[kl_key] for row in log if kl_key in row]
    lengths = [row["completions/mean_length"] for row in log if "completions/mean_length" in row]
    if cfg.rl.algorithm == "grpo" and kls and lengths:  # GRPO logs KL per token: put it per sequence
        kls = [k * n for k, n in zip(kls, lengths)]
    health = _read_health(ctx.dir("rl"))
    metrics = {
        "final_kl": kls[-1] if kls else None,
        "alerts": result.metrics.get("monitor_alerts", len(health)),
        "alert_messages": health,
        "train_runtime": result.metrics.get("train_runtime"),
    }
    return {"model_dir": str(result.model_dir)}, metrics


GOLD_KEY = "rewards/lab_gold/mean"


def _rename_gold(row: dict) -> dict:
    return {("lab/gold" if k == GOLD_KEY else k): v for k, v in row.items()}


def _read_health(run_dir: Path) -> list[str]:
    """Alert messages from the monitor's health timeline, in order."""
    path = run_dir / "health.jsonl"
    if not path.exists():
        return []
    out = []
    for row in read_jsonl(path):
        for alert in row.get("alerts", []):
            out.append(f"step {row.get('step')}: {alert.get('message', alert) if isinstance(alert, dict) else alert}")
    return out


# ------------------------------------------------------------------------------------------ final evaluation
def stage_final_eval(ctx: StageContext) -> tuple[dict, dict]:
    cfg = ctx.cfg
    prompts = rl_prompts(ctx)[1]
    rm, rm_tok = load_scorer(ctx.outputs["reward"]["model_dir"], cfg.model.preset)
    metrics: dict[str, Any] = {"n_prompts": len(prompts)}
    samples = {}
    # Both policies are sampled as the RL stage sampled during training (GRPO: 1.0; PPO: 0.7 unless set).
    rl_config = cfg.trainer_config(cfg.rl.algorithm)
    temperature = rl_config.temperature
    max_new = cfg.rl.max_new_tokens or (
        rl_config.response_length if cfg.rl.algorithm == "ppo" else rl_config.max_completion_length
    )
    metrics.update(temperature=temperature, max_new_tokens=max_new)
    for name in ("sft", "rl"):
        responses = sample_responses(
            ctx.outputs[name]["model_dir"],
            prompts,
            max_new,
            cfg.seed,
            temperature,
            preset=cfg.model.preset,
        )
        samples[name] = responses
        texts = [  # scored as the reward model was trained (scoring.encode: EOS appended / the chat template)
            p + r if isinstance(p, str) else [*p, {"role": "assistant", "content": r}]
            for p, r in zip(prompts, responses)
        ]
        metrics[f"proxy_{name}"] = float(np.mean(score_texts(rm, rm_tok, texts, device=rm.device)))
        metrics[f"length_{name}"] = float(np.mean([len(r) for r in responses]))
        if cfg.data.prompts == LAB:
            metrics[f"gold_{name}"] = float(lab.gold_rewards(prompts, responses).mean())
    if "gold_rl" in metrics:
        metrics["gold_gain"] = metrics["gold_rl"] - metrics["gold_sft"]
        ctx.say(f"[final_eval] gold reward: SFT {metrics['gold_sft']:.3f} -> RL {metrics['gold_rl']:.3f}")
    rows = [{"prompt": p, "sft": s, "rl": r} for p, s, r in zip(prompts, samples["sft"], samples["rl"])]
    write_jsonl(ctx.dir("final_eval") / "samples.jsonl", rows)
    return {"samples": str(ctx.dir("final_eval") / "samples.jsonl")}, metrics


# The pipeline's stages in order, each with the function that runs it.
STAGE_FUNCTIONS = {
    "sft": stage_sft,
    "preferences": stage_preferences,
    "reward": stage_reward,
    "rm_eval": stage_rm_eval,
    "rl": stage_rl,
    "final_eval": stage_final_eval,
}
