"""The pipeline's stage functions. Each takes a :class:`~rlhfkit.pipeline.StageContext` and returns
``(outputs, metrics)``: paths it wrote and the numbers the report shows. Stages read only their
predecessors' recorded outputs, so any stage can be rerun on its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.io import atomic_path, write_json

logger = logging.getLogger(__name__)

LAB = "lab"


# ------------------------------------------------------------------------------------------ helpers
def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _uses_lab(ctx) -> bool:
    return ctx.cfg.model.model_name_or_path.startswith("lab:")


def _rl_prompts(ctx, part: str) -> list:
    """RL prompts (``part="train"``) or held-out prompts for the final evaluation (``part="eval"``).

    Lab: ``lab.rl_prompts`` / ``rl.eval_prompts`` prompts from differently seeded generators (fresh samples, but the
    lab's task has only 72 distinct prompts, so they are not unseen ones; the gold reward measures the policy, not
    generalisation). A dataset: shuffled with the seed; the first ``rl.eval_prompts`` rows are held out for the final
    evaluation, the rest (at most ``data.max_prompts``) are the RL prompts. Prompts are strings or chat messages.
    """
    cfg = ctx.cfg
    if cfg.data.prompts == LAB:
        from rlhfkit.lab import make_prompts

        if part == "train":
            return make_prompts(cfg.lab.rl_prompts, seed=cfg.seed + 3)
        return make_prompts(cfg.rl.eval_prompts, seed=cfg.seed + 10_000)
    from rlhfkit.configs import load_table
    from rlhfkit.errors import DataError

    table = load_table(cfg.data.prompts, cfg.data.split)
    if "prompt" not in table.column_names:
        raise DataError(f"data.prompts={cfg.data.prompts!r} has no 'prompt' column; it has {table.column_names}")
    prompts = table.shuffle(seed=cfg.seed)["prompt"]
    n_eval = cfg.rl.eval_prompts
    if len(prompts) <= n_eval:
        raise DataError(
            f"data.prompts={cfg.data.prompts!r} has {len(prompts)} prompts, not more than rl.eval_prompts={n_eval} "
            "held out for the final evaluation; lower rl.eval_prompts or add prompts"
        )
    if part == "eval":
        return list(prompts[:n_eval])
    end = len(prompts) if cfg.data.max_prompts is None else n_eval + cfg.data.max_prompts
    return list(prompts[n_eval:end])


# ------------------------------------------------------------------------------------------ SFT
def stage_sft(ctx) -> tuple[dict, dict]:
    from datasets import Dataset

    from rlhfkit.configs import DataArguments, load_sft_data, resolve_model, split_eval
    from rlhfkit.stages import run_sft

    cfg = ctx.cfg
    with ctx.main_process_first():  # the main process builds a lab model / downloads data once; the others reuse it
        base = resolve_model(cfg.model.model_name_or_path, cache_dir=cfg.output_dir / "base_model", seed=cfg.seed)
        if cfg.data.sft == LAB:
            from rlhfkit.lab import demonstrations

            table = Dataset.from_list(demonstrations(cfg.lab.demonstrations, seed=cfg.seed))
            train, held_out = split_eval(table, cfg.data.eval_fraction, cfg.seed)
        else:
            data = DataArguments(
                dataset=cfg.data.sft, dataset_split=cfg.data.split, eval_fraction=cfg.data.eval_fraction
            )
            train, held_out = load_sft_data(data, seed=cfg.seed)
    ctx.say(f"[sft] {len(train)} demonstrations, {0 if held_out is None else len(held_out)} held out")
    result = run_sft(base, train, cfg.stage_config("sft"), eval_dataset=held_out, preset=cfg.model.preset)
    if ctx.is_main:
        write_json(ctx.dir("sft") / "log_history.json", result.log_history)
    keep = ("eval_loss_before", "eval_loss", "train_loss", "train_runtime", "eval_mean_token_accuracy")
    metrics = {k: result.metrics[k] for k in keep if k in result.metrics}
    return {"model_dir": str(result.model_dir), "base_model": base}, metrics


# ------------------------------------------------------------------------------------------ preferences
def _pairs_from_votes(rows: list[dict], keep: np.ndarray, label: np.ndarray, agreement: np.ndarray) -> list[dict]:
    out = []
    for row, k, lab_, agr in zip(rows, keep, label, agreement):
        if not k:
            continue
        a_wins = lab_ == 1
        out.append(
            {
                "prompt": row["prompt"],
                "chosen": row["response_a"] if a_wins else row["response_b"],
                "rejected": row["response_b"] if a_wins else row["response_a"],
                "agreement": float(agr),
            }
        )
    return out


def _gold_eval_pairs(rows: list[dict]) -> list[dict]:
    """Held-out lab pairs labelled by the gold reward (ties in gold dropped): accuracy here is vs the truth."""
    return [
        {
            "prompt": r["prompt"],
            "chosen": r["response_a"] if r["gold_a"] > r["gold_b"] else r["response_b"],
            "rejected": r["response_b"] if r["gold_a"] > r["gold_b"] else r["response_a"],
        }
        for r in rows
        if r["gold_a"] != r["gold_b"]
    ]


def stage_preferences(ctx) -> tuple[dict, dict]:
    cfg = ctx.cfg
    out_dir = ctx.dir("preferences")
    if cfg.data.preferences == LAB:
        train, held_out, metrics = _lab_preferences(ctx)
    else:
        from rlhfkit.configs import preference_source, split_eval
        from rlhfkit.data import load_preferences

        source = preference_source(cfg.data.preferences, cfg.data.split)
        loaded = load_preferences(source, format=cfg.data.preference_format)
        table, held = split_eval(loaded.to_dataset(), cfg.data.eval_fraction, cfg.seed)
        train, held_out = table.to_list(), [] if held is None else held.to_list()
        metrics = {"n_pairs": len(train), "n_held_out": len(held_out), "data": loaded.report.summary()}
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", held_out)
    ctx.say(f"[preferences] {len(train)} training pairs, {len(held_out)} held out")
    return {"train": str(out_dir / "train.jsonl"), "eval": str(out_dir / "eval.jsonl")}, metrics


def _lab_preferences(ctx) -> tuple[list[dict], list[dict], dict]:
    from rlhfkit import lab
    from rlhfkit.agreement import filter_votes, item_stats

    cfg, la = ctx.cfg, ctx.cfg.lab
    pool = lab.LabelerPool(la.labelers, noise=la.noise, length_bias=la.length_bias, seed=cfg.seed)
    rows = lab.comparison_dataset(la.comparisons, pool, seed=cfg.seed + 1, labelers_per_item=la.labelers_per_item)
    votes = np.array([r["votes"] for r in rows], dtype=np.int8)
    gold_pref = np.array([1 if r["gold_a"] > r["gold_b"] else 0 for r in rows])
    decided = np.array([r["gold_a"] != r["gold_b"] for r in rows])

    raw = item_stats(votes)
    unfiltered = ~raw.tie
    ag = cfg.agreement
    if ag.enabled:
        result = filter_votes(votes, min_agreement=ag.min_agreement, drop_unreliable=ag.drop_unreliable)
        keep, stats, report = result.keep, result.stats, result.report
        dropped_labelers = list(result.dropped_labelers)
    else:
        from rlhfkit.agreement import analyze

        keep, stats, report, dropped_labelers = unfiltered, raw, analyze(votes), []

    def gold_share(mask, label):
        m = mask & decided
        return float((label[m] == gold_pref[m]).mean()) if m.any() else float("nan")

    train = _pairs_from_votes(rows, keep, stats.label, stats.agreement)
    held_out = _gold_eval_pairs(lab.comparison_dataset(la.eval_comparisons, pool, seed=cfg.seed + 2))
    metrics = {
        "n_comparisons": len(rows),
        "n_pairs": len(train),
        "kept_share": float(keep.mean()),
        "mean_agreement": report.mean_agreement,
        "fleiss_kappa": report.fleiss_kappa,
        "krippendorff_alpha": report.krippendorff_alpha,
        "flagged_labelers": [int(i) for i in np.flatnonzero(report.labelers.flagged)],
        "dropped_labelers": [int(i) for i in dropped_labelers],
        "gold_agreement_unfiltered": gold_share(unfiltered, raw.label),
        "gold_agreement_filtered": gold_share(keep, stats.label),
        "n_held_out": len(held_out),
    }
    ctx.say(
        f"[preferences] majority label agrees with gold: {metrics['gold_agreement_unfiltered']:.3f} unfiltered -> "
        f"{metrics['gold_agreement_filtered']:.3f} after agreement filtering ({metrics['kept_share']:.0%} kept)"
    )
    return train, held_out, metrics


# ------------------------------------------------------------------------------------------ reward model
def stage_reward(ctx) -> tuple[dict, dict]:
    from rlhfkit.stages import run_reward

    cfg, prefs = ctx.cfg, ctx.outputs["preferences"]
    train = read_jsonl(prefs["train"])
    held_out = read_jsonl(prefs["eval"]) or None
    train = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train]
    held_out = None if held_out is None else [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in held_out]
    result = run_reward(
        ctx.outputs["sft"]["model_dir"],
        train,
        cfg.stage_config("reward"),
        eval_dataset=held_out,
        preset=cfg.model.preset,
    )
    if ctx.is_main:
        write_json(ctx.dir("reward") / "log_history.json", result.log_history)
    keep = ("eval_accuracy_before", "eval_accuracy", "train_loss", "train_runtime")
    return {"model_dir": str(result.model_dir)}, {k: result.metrics[k] for k in keep if k in result.metrics}


def _load_scorer(model_dir: str, preset: str):
    """The reward model for evaluation: 4-bit under qlora (as the RL stage scores), else moved to the GPU if any."""
    from rlhfkit.models import detect_hardware, load_reward_model

    model, tokenizer = load_reward_model(model_dir, preset)
    if not getattr(model, "is_quantized", False):
        model.to(detect_hardware().device)
    return model.eval(), tokenizer


def stage_rm_eval(ctx) -> tuple[dict, dict]:
    from rlhfkit.pipeline import GateFailed
    from rlhfkit.rm_eval import evaluate_reward_model, rm_gate, write_report

    cfg = ctx.cfg
    pairs = read_jsonl(ctx.outputs["preferences"]["eval"])
    if not pairs:
        from rlhfkit.errors import DataError

        raise DataError("no held-out preference pairs to evaluate the reward model on; set data.eval_fraction > 0")
    # Loaded as RL will use it (4-bit under qlora), on the GPU when there is one; truncated as it was trained.
    model, tokenizer = _load_scorer(ctx.outputs["reward"]["model_dir"], cfg.model.preset)
    max_length = cfg.stage_config("reward").max_length
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
def stage_rl(ctx) -> tuple[dict, dict]:
    from rlhfkit.lab import lab_gold  # the gold reward, logged beside the proxy and never optimised
    from rlhfkit.monitors import MonitorConfig

    cfg = ctx.cfg
    with ctx.main_process_first():
        prompts = [{"prompt": p} for p in _rl_prompts(ctx, "train")]
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
    if cfg.rl.algorithm == "grpo":
        from rlhfkit.stages import run_grpo

        result = run_grpo(
            sft_model,
            prompts,
            cfg.stage_config("grpo"),
            reward_funcs=[lab_gold] if lab_task else None,
            reward_weights=[1.0, 0.0] if lab_task else None,  # gold is logged, never optimised
            **common,
        )
    else:
        from rlhfkit.stages import run_ppo

        result = run_ppo(
            sft_model,
            prompts,
            cfg.stage_config("ppo"),
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
def sample_responses(
    model_dir: str,
    prompts: list,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
    batch_size: int = 64,
    preset: str = "full",
) -> list[str]:
    """Sample one response per prompt at ``temperature`` with top_k 0 and top_p 1 (the policy RL optimised).

    Prompts are strings or chat messages (rendered with the chat template and its generation prompt). ``preset``
    ``qlora`` loads the model in 4 bits, as the RL stage did.
    """
    import torch

    from rlhfkit.models import detect_hardware, load_policy

    model, tokenizer = load_policy(model_dir, preset, padding_side="left")
    if not getattr(model, "is_quantized", False):
        model.to(detect_hardware().device)
    model.eval()
    chat = bool(prompts) and not isinstance(prompts[0], str)
    if chat:
        prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch_size):
        # a rendered chat template already holds its special tokens
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=not chat)
        with torch.no_grad():
            gen = model.generate(
                **enc.to(model.device),
                max_new_tokens=max_new_tokens,
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=temperature,
                pad_token_id=tokenizer.pad_token_id,
            )
        out += tokenizer.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return out


def stage_final_eval(ctx) -> tuple[dict, dict]:
    from rlhfkit.rm_eval import score_texts

    cfg = ctx.cfg
    prompts = _rl_prompts(ctx, "eval")
    rm, rm_tok = _load_scorer(ctx.outputs["reward"]["model_dir"], cfg.model.preset)
    metrics: dict[str, Any] = {"n_prompts": len(prompts)}
    samples = {}
    # Both policies are sampled as the RL stage sampled during training (GRPO: 1.0; PPO: 0.7 unless set).
    rl_config = cfg.stage_config(cfg.rl.algorithm)
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
        texts = [  # scored as the reward model was trained (rm_eval.encode: EOS appended / the chat template)
            p + r if isinstance(p, str) else [*p, {"role": "assistant", "content": r}]
            for p, r in zip(prompts, responses)
        ]
        metrics[f"proxy_{name}"] = float(np.mean(score_texts(rm, rm_tok, texts, device=rm.device)))
        metrics[f"length_{name}"] = float(np.mean([len(r) for r in responses]))
        if cfg.data.prompts == LAB:
            from rlhfkit.lab import gold_rewards

            metrics[f"gold_{name}"] = float(gold_rewards(prompts, responses).mean())
    if "gold_rl" in metrics:
        metrics["gold_gain"] = metrics["gold_rl"] - metrics["gold_sft"]
        ctx.say(f"[final_eval] gold reward: SFT {metrics['gold_sft']:.3f} -> RL {metrics['gold_rl']:.3f}")
    rows = [{"prompt": p, "sft": s, "rl": r} for p, s, r in zip(prompts, samples["sft"], samples["rl"])]
    write_jsonl(ctx.dir("final_eval") / "samples.jsonl", rows)
    return {"samples": str(ctx.dir("final_eval") / "samples.jsonl")}, metrics
