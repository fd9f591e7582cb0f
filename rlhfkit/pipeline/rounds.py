"""Iterative RLHF: rounds r >= 2 of the pipeline (the ``rounds`` section, :mod:`rlhfkit.pipeline.round_config`).

Round 1 is the pipeline's own preferences, reward, rm_eval and rl stages. Each round r >= 2 runs, as manifest entries
and folders ``round-<r>/<stage>`` (so a killed run resumes the round where it stopped):

* ``comparisons``: round r-1's returned policy answers ``rounds.k`` times per fresh prompt
  (:func:`rlhfkit.feedback.sample.sample_comparisons`; with the lab's gold reward, ``gold_mean`` is the gold of that
  policy's answers);
* ``preferences``: the answers labelled as round 1's were (the lab's pool, the AI judge or people,
  :func:`rlhfkit.pipeline.stages.label_comparisons`; people's votes go to
  :func:`~rlhfkit.pipeline.round_config.round_votes`, and until there are enough the run stops, ``waiting for
  labels``, and resumes the round when run again), filtered by agreement, split; the reward model's training pairs
  are the new ones plus a ``rounds.mix`` share of the earlier rounds' (``train.jsonl``; the new alone: ``new.jsonl``);
* ``reward``: the reward model refreshed: trained on them from round r-1's reward model (``continue``) or from the
  SFT model (``retrain``);
* ``rm_eval``: the refreshed model on the held-out pairs of the new answers (gold-labelled in the lab), which the gate
  judges, and on round 1's held-out set (``accuracy_original``); round r-1's stale model on the new answers
  (``accuracy_stale``): what the refresh recovered;
* ``rl``: the configured algorithm (PPO, GRPO, RLOO, best-of-N) from round r-1's policy, its reference (the KL
  leash; best-of-N's measured KL) still the SFT model (RLHFlow), monitors on, the healthy model returned;
  ``rl.algorithm: dpo``: iterative DPO the RLHFlow way, from round r-1's policy with the SFT
  model as the reference, on the best vs worst of each prompt's answers by the refreshed reward model
  (``pairs.jsonl``).

final_eval then judges the last round's policy against the SFT model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from rlhfkit import lab
from rlhfkit.core.errors import DataError
from rlhfkit.core.io import read_jsonl, write_jsonl
from rlhfkit.data.comparisons import read_comparisons
from rlhfkit.data.tables import LAB
from rlhfkit.feedback.sample import sample_prompts
from rlhfkit.pipeline.config import round_stage
from rlhfkit.pipeline.context import StageContext
from rlhfkit.pipeline.round_config import round_votes
from rlhfkit.pipeline.stages import (
    STAGE_FUNCTIONS,
    RLStage,
    evaluate_rm,
    gate_metrics,
    label_comparisons,
    run_rl,
    sample_answers,
    train_reward,
)
from rlhfkit.reward.report import write_report

LAB_ROUND_SEED = 7919  # lab prompts of round r are drawn with seed + r * this (the lab has 72 distinct prompts)


def stage_function(stage: str) -> Callable[[StageContext], tuple[dict, dict]]:
    """The function that runs ``stage``: a pipeline stage's, or a round's (``round-3/reward``)."""
    if stage in STAGE_FUNCTIONS:
        return STAGE_FUNCTIONS[stage]
    folder, name = stage.split("/")
    return functools.partial(ROUND_FUNCTIONS[name], r=int(folder.removeprefix("round-")))


def round_prompts(ctx: StageContext, r: int) -> list:
    """Round ``r``'s fresh prompts: from ``data.prompts``, not the final evaluation's held-out ones, after those of
    round 1 (``preferences.prompts`` with source comparisons / judge) and of rounds 2..r-1. The lab's task has 72
    distinct prompts, so lab rounds draw theirs anew (seeded per round): the answers are fresh, the prompts not."""
    cfg, n = ctx.cfg, ctx.cfg.rounds.round_prompts()
    if cfg.data.prompts == LAB:
        return sample_prompts(LAB, n, seed=cfg.seed + r * LAB_ROUND_SEED, held_out=cfg.rl.eval_prompts)[0]
    first = cfg.preferences.prompts if cfg.preferences.source != "data" else 0
    start = first + (r - 2) * n
    prompts = sample_prompts(
        cfg.data.prompts, start + n, seed=cfg.seed, split=cfg.data.split, held_out=cfg.rl.eval_prompts
    )[0]
    if len(prompts) < start + n:
        raise DataError(
            f"data.prompts={cfg.data.prompts!r} has {len(prompts)} distinct prompts besides the rl.eval_prompts "
            "held out; "
            f"round {r} needs {start + n} (round 1's {first} and {n} per round); lower rounds.prompts_per_round or "
            "rounds.count, or add prompts"
        )
    return prompts[start:]


def round_comparisons(ctx: StageContext, r: int) -> tuple[dict, dict]:
    stage, policy = round_stage(r, "comparisons"), round_stage(r - 1, "rl")
    out = ctx.dir(stage) / "comparisons.jsonl"
    prompts = round_prompts(ctx, r)
    sampled = sample_answers(ctx, ctx.outputs[policy]["model_dir"], prompts, out, k=ctx.cfg.rounds.k, name=policy)
    ctx.say(f"[{stage}] {policy}'s answers: {sampled.summary()}")
    rows = read_comparisons(out)
    metrics = {"n_prompts": len(prompts), "n_comparisons": len(rows), "duplicates": sampled.duplicates}
    if ctx.cfg.data.prompts == LAB:  # the gold of round r-1's policy, on the answers it gave here
        metrics["gold_mean"] = float(np.mean([lab.gold_reward(x["prompt"], a) for x in rows for a in x["responses"]]))
    return {"comparisons": str(out), "policy": ctx.outputs[policy]["model_dir"]}, metrics


def round_preferences(ctx: StageContext, r: int) -> tuple[dict, dict]:
    cfg, stage = ctx.cfg, round_stage(r, "preferences")
    folder = ctx.dir(stage)
    comparisons = ctx.outputs[round_stage(r, "comparisons")]["comparisons"]
    people = round_votes(cfg.preferences.votes, r) if cfg.preferences.labels == "people" else None
    new, held_out, metrics = label_comparisons(ctx, comparisons, folder / "votes.jsonl", stage, people)
    old = read_jsonl(ctx.outputs["preferences"]["train"])
    for q in range(2, r):
        old += read_jsonl(ctx.outputs[round_stage(q, "preferences")]["new"])
    rng = np.random.default_rng([cfg.seed, r])
    kept = [old[i] for i in sorted(rng.choice(len(old), size=round(cfg.rounds.mix * len(old)), replace=False))]
    if not held_out:
        raise DataError(
            f"{stage}: no held-out pairs of the new answers to evaluate the refreshed reward model on; raise "
            "data.eval_fraction or rounds.labels_per_round"
        )
    train = new + kept
    if any("group" in p for p in train):  # a ranking's pairs share a group (K-wise loss): a lone pair is its own
        train = [p if p.get("group") is not None else {**p, "group": f"pair-{r}-{i}"} for i, p in enumerate(train)]
    write_jsonl(folder / "new.jsonl", new)
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "eval.jsonl", held_out)
    metrics.update(n_new_pairs=len(new), n_old_pairs_kept=len(kept), n_pairs=len(new) + len(kept))
    ctx.say(f"[{stage}] {len(new)} new training pairs + {len(kept)} earlier ones, {len(held_out)} held out")
    outputs = {"train": str(folder / "train.jsonl"), "new": str(folder / "new.jsonl")}
    return {**outputs, "eval": str(folder / "eval.jsonl"), "votes": str(folder / "votes.jsonl")}, metrics


def round_reward(ctx: StageContext, r: int) -> tuple[dict, dict]:
    continues = ctx.cfg.rounds.reward_refresh == "continue"
    start = ctx.outputs[round_stage(r - 1, "reward") if continues else "sft"]["model_dir"]
    return train_reward(ctx, start, round_stage(r, "preferences"), round_stage(r, "reward"))


def round_rm_eval(ctx: StageContext, r: int) -> tuple[dict, dict]:
    cfg, stage = ctx.cfg, round_stage(r, "rm_eval")
    folder = ctx.dir(stage)
    new = read_jsonl(ctx.outputs[round_stage(r, "preferences")]["eval"])
    original = read_jsonl(ctx.outputs["preferences"]["eval"])
    refreshed = ctx.outputs[round_stage(r, "reward")]["model_dir"]
    report, ensemble = evaluate_rm(cfg, refreshed, new, folder)
    metrics = gate_metrics(cfg, report, ensemble, folder)  # gated on the answers RL will now meet
    stale, _ = evaluate_rm(cfg, ctx.outputs[round_stage(r - 1, "reward")]["model_dir"], new, folder / "stale")
    write_report(stale, folder / "stale")
    metrics.update(accuracy_stale=stale.accuracy, n_new_pairs=len(new))
    if original:
        on_original, _ = evaluate_rm(cfg, refreshed, original, folder / "original")
        write_report(on_original, folder / "original")
        metrics["accuracy_original"] = on_original.accuracy
    ctx.say(
        f"[{stage}] on {len(new)} held-out pairs of round {r - 1}'s answers: the stale reward model "
        f"{stale.accuracy:.3f} -> refreshed {report.accuracy:.3f} (on round 1's held-out set: "
        f"{metrics.get('accuracy_original', float('nan')):.3f}); gate: {metrics['gate_summary']}"
    )
    return {"report_dir": str(folder)}, metrics


def round_rl(ctx: StageContext, r: int) -> tuple[dict, dict]:
    stage = round_stage(r, "rl")
    pairs = None
    if ctx.cfg.rl.algorithm == "dpo":  # RLHFlow's iterative DPO: best vs worst of the K answers by the refreshed RM
        pairs = ctx.dir(stage) / "pairs.jsonl"
        comparisons = read_comparisons(ctx.outputs[round_stage(r, "comparisons")]["comparisons"])
        rows = best_vs_worst(ctx.cfg, ctx.outputs[round_stage(r, "reward")]["model_dir"], comparisons)
        write_jsonl(pairs, rows)
        ctx.say(
            f"[{stage}] {len(rows)} DPO pairs: best vs worst of each prompt's answers by the refreshed reward model"
        )
    names = RLStage(
        stage=stage,
        reward=round_stage(r, "reward"),
        rm_eval=round_stage(r, "rm_eval"),
        start=round_stage(r - 1, "rl"),
        preferences=round_stage(r, "preferences"),
        dpo_pairs=None if pairs is None else str(pairs),
    )
    return run_rl(ctx, names)


def best_vs_worst(cfg, reward_model: str, comparisons: list[dict]) -> list[dict]:
    """One pair per comparisons row: its answer the reward model scores highest (chosen) vs lowest (rejected); rows
    whose answers all score the same are left out."""
    from rlhfkit.models.scoring import load_scorer, score_texts

    model, tokenizer = load_scorer(reward_model, cfg.model.preset)
    texts = [
        x["prompt"] + a if isinstance(x["prompt"], str) else [*x["prompt"], {"role": "assistant", "content": a}]
        for x in comparisons
        for a in x["responses"]
    ]
    scores, out, at = score_texts(model, tokenizer, texts, device=model.device), [], 0
    for x in comparisons:
        mine = np.asarray(scores[at : at + len(x["responses"])])
        at += len(x["responses"])
        if mine.max() > mine.min():
            best, worst = x["responses"][int(mine.argmax())], x["responses"][int(mine.argmin())]
            out.append({"prompt": x["prompt"], "chosen": best, "rejected": worst})
    return out


ROUND_FUNCTIONS = {
    "comparisons": round_comparisons,
    "preferences": round_preferences,
    "reward": round_reward,
    "rm_eval": round_rm_eval,
    "rl": round_rl,
}
