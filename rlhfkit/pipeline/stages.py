"""The pipeline's stages. Each takes a :class:`~rlhfkit.pipeline.context.StageContext` and returns
``(outputs, metrics)``: paths it wrote and the numbers the report shows. Stages read only their
predecessors' recorded outputs, so any stage can be rerun on its own.

They call the same functions the recipes call: :mod:`rlhfkit.data.tables` for data, :mod:`rlhfkit.train` for
the training runs, :mod:`rlhfkit.models.scoring` and :mod:`rlhfkit.reward.evaluate` for evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

from rlhfkit import lab
from rlhfkit.core.arguments import DataArguments, resolve_model
from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.hardware import detect_hardware
from rlhfkit.core.io import atomic_path, read_jsonl, write_json, write_jsonl
from rlhfkit.data.comparisons import read_comparisons
from rlhfkit.data.preferences import detect_format, load_preferences
from rlhfkit.data.tables import LAB, lab_preferences, load_prompts, load_sft_data, preference_source, split_eval
from rlhfkit.data.votelog import read_vote_log
from rlhfkit.data.votes import agreement_summary, labelling_progress
from rlhfkit.feedback.judge import judge_file
from rlhfkit.feedback.sample import sample_comparisons, sample_prompts
from rlhfkit.models.loading import ADAPTER_SUBDIR
from rlhfkit.models.sampling import load_for_sampling
from rlhfkit.models.scoring import load_reward_function, load_scorer, place_reward_function
from rlhfkit.monitors import MonitorConfig, read_metrics
from rlhfkit.pipeline.context import GateFailed, StageContext, WaitingForLabels
from rlhfkit.reward.ensemble import MEMBER_DIR, read_ensemble
from rlhfkit.reward.evaluate import evaluate_ensemble, evaluate_reward_model
from rlhfkit.reward.gate import rm_gate
from rlhfkit.reward.report import write_report
from rlhfkit.reward.trainer import run_reward
from rlhfkit.rl.algorithms import ALGORITHMS, USES_REWARD_MODEL
from rlhfkit.rl.dpo import evaluate_implicit_reward
from rlhfkit.rl.policy_eval import evaluate_policy, paired_gain, paired_win_rates
from rlhfkit.rl.winrate import rate_text
from rlhfkit.sft import run_sft

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
    outputs: dict[str, str] = {}
    if cfg.preferences.source in ("comparisons", "judge"):
        train, held_out, metrics, outputs = _comparison_preferences(ctx)
    elif cfg.data.preferences == LAB:
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
        fmt = cfg.data.preference_format
        loaded = _read_preferences(source, cfg, detect_format(source) if fmt == "auto" else fmt)
        train, held_out, metrics = _split_pairs(loaded, cfg, out_dir)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "eval.jsonl", held_out)
    ctx.say(f"[preferences] {len(train)} training pairs, {len(held_out)} held out")
    return {"train": str(out_dir / "train.jsonl"), "eval": str(out_dir / "eval.jsonl"), **outputs}, metrics


def _read_preferences(source, cfg, fmt: str):
    """A preference source read in format ``fmt`` with ``data.preference_options``; per-labeler votes are filtered by
    the ``agreement`` section (min_agreement, drop_unreliable, ties) unless ``agreement.enabled`` is false (then only
    ties are dropped or kept by margin)."""
    options = dict(cfg.data.preference_options or {})
    if fmt == "votes":
        ag = cfg.agreement
        filtering = {"min_agreement": ag.min_agreement, "drop_unreliable": ag.drop_unreliable} if ag.enabled else {}
        options = {**filtering, "ties": ag.ties, **options}
    try:
        return load_preferences(source, format=fmt, **options)
    except TypeError as e:  # an option the format's reader does not take
        raise ConfigError(f"data.preference_options={options!r} for format {fmt!r}: {e}") from None


def _split_pairs(loaded, cfg, out_dir: Path) -> tuple[list, list, dict]:
    """Pairs split into training and held-out ones (``data.eval_fraction``; rankings stay whole), the metrics, and
    per-labeler votes' agreement report (also written as ``agreement.json``)."""
    table, held = split_eval(loaded.to_dataset(), cfg.data.eval_fraction, cfg.seed)
    train, held_out = table.to_list(), [] if held is None else held.to_list()
    metrics = {"n_pairs": len(train), "n_held_out": len(held_out), "data": loaded.report.summary()}
    if loaded.agreement is not None:  # per-labeler votes: the agreement report, also as agreement.json
        summary = agreement_summary(loaded)
        write_json(out_dir / "agreement.json", summary)
        keys = ("fleiss_kappa", "krippendorff_alpha", "kept", "dropped", "dropped_labelers")
        metrics.update({k: summary[k] for k in keys})
    return train, held_out, metrics


def _comparison_preferences(ctx: StageContext) -> tuple[list, list, dict, dict]:
    """``preferences.source: comparisons`` / ``judge``: the SFT model's ``k`` answers to ``preferences.prompts``
    prompts (``comparisons.jsonl``, resumed when the stage is), labelled and split by :func:`label_comparisons`.
    Returns ``(train, held_out, metrics, outputs)``."""
    cfg, pp = ctx.cfg, ctx.cfg.preferences
    out_dir = ctx.dir("preferences")
    comparisons, votes = out_dir / "comparisons.jsonl", out_dir / "votes.jsonl"
    prompts, _ = sample_prompts(
        cfg.data.prompts, pp.prompts, seed=cfg.seed, split=cfg.data.split, held_out=cfg.rl.eval_prompts
    )
    sampled = sample_answers(ctx, ctx.outputs["sft"]["model_dir"], prompts, comparisons, k=pp.k, name="sft")
    ctx.say(f"[preferences] the SFT model's answers: {sampled.summary()}")
    train, held_out, metrics = label_comparisons(ctx, comparisons, votes, "preferences")
    metrics.update(n_prompts=len(prompts), duplicates=sampled.duplicates)
    return train, held_out, metrics, {"comparisons": str(comparisons), "votes": str(votes)}


def sample_answers(ctx: StageContext, model_dir: str, prompts: list, out: Path, *, k: int, name: str):
    """``k`` answers of the policy in ``model_dir`` (the run's stage ``name``) per prompt into the comparisons file
    ``out``, at the preferences section's temperature and length (resumed where ``out`` stopped)."""
    cfg, pp = ctx.cfg, ctx.cfg.preferences
    model, tokenizer = load_for_sampling(model_dir, cfg.model.preset)
    sampled = sample_comparisons(
        model,
        tokenizer,
        prompts,
        k=k,
        out=out,
        model_name=f"run:{cfg.output_dir.resolve()}:{name}",
        temperature=pp.temperature,
        max_new_tokens=pp.max_new_tokens,
        seed=cfg.seed,
    )
    del model
    return sampled


def label_comparisons(
    ctx: StageContext, comparisons: Path, votes: Path, stage: str, people: str | None = None
) -> tuple[list, list, dict]:
    """A comparisons file labelled by the lab's pool, read from the people's votes file ``people`` or labelled by the
    AI judge (into ``votes``; the judge's resumed), filtered by the agreement section and split (:func:`_split_pairs`,
    into ``stage``'s folder). People's votes are read once there are enough (:func:`wait_for_votes`; else the stage
    waits for labels). On lab prompts the held-out pairs are relabelled by the gold reward (gold ties dropped), so
    rm_eval measures accuracy against the truth, and ``gold_agreement_filtered`` is the share of the pairs whose
    chosen answer has the higher gold reward. Returns ``(train, held_out, metrics)``."""
    cfg, pp = ctx.cfg, ctx.cfg.preferences
    rows, people = read_comparisons(comparisons), people or pp.votes
    if pp.source == "judge":
        judged = judge_file(
            comparisons,
            votes,
            model=pp.judge,
            constitution=pp.constitution,
            tie_margin=pp.tie_margin,
            principles_per_pair=pp.principles_per_pair,
            seed=cfg.seed,
            preset=cfg.model.preset,
        )
        ctx.say(f"[{stage}] the judge: {judged.n_written} judgements written, {judged.n_skipped} already there")
    elif pp.labels == "lab":
        la = cfg.lab
        pool = lab.LabelerPool(la.labelers, noise=la.noise, length_bias=la.length_bias, seed=cfg.seed)
        write_jsonl(votes, pool.answer(rows, labelers_per_item=la.labelers_per_item, seed=cfg.seed))
    else:
        wait_for_votes(ctx, comparisons, rows, people, stage)
        with atomic_path(votes) as tmp:  # the run keeps the votes it trained on
            shutil.copyfile(Path(people).expanduser(), tmp)
    loaded = _read_preferences(votes, cfg, "votes")
    train, held_out, metrics = _split_pairs(loaded, cfg, ctx.dir(stage))
    metrics.update(
        n_comparisons=len(rows),
        n_labelled_pairs=sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows),
        responses_per_prompt=sum(len(r["responses"]) for r in rows) / len(rows),
        n_votes=len(read_vote_log(votes)),
    )
    if cfg.data.prompts == LAB:
        metrics["gold_agreement_filtered"] = gold_share(train + held_out)
        held_out = gold_labelled(held_out)
        metrics["n_held_out"] = len(held_out)
        ctx.say(f"[{stage}] agreement-filtered labels agree with gold: {metrics['gold_agreement_filtered']:.3f}")
    return train, held_out, metrics


def wait_for_votes(ctx: StageContext, comparisons: Path, rows: list[dict], people: str, stage: str) -> None:
    """Go on when the people's votes file ``people`` holds enough votes on the comparisons ``rows``
    (``preferences.min_votes``; None: every pair labelled once), else raise :class:`WaitingForLabels` with the exact
    ``rlhfkit label`` command: the run stops there (exit 0) and the same ``rlhfkit run`` resumes the stage."""
    need = ctx.cfg.preferences.min_votes
    progress = labelling_progress(Path(people).expanduser(), rows)
    if progress.enough(need):
        ctx.say(f"[{stage}] people's votes in {people}: {progress.summary()}")
        return
    command = f"rlhfkit label {shlex.quote(str(Path(comparisons).resolve()))} --out {shlex.quote(str(people))}"
    wanted = f"{need} votes (preferences.min_votes)" if need is not None else "every pair labelled once"
    message = (
        f"[{stage}] waiting for labels: {progress.summary()}, the run needs {wanted}. Label the comparisons with\n"
        f"    {command}\n"
        f"then run the same `rlhfkit run` again to go on (`--min-votes N` goes on with N votes)"
    )
    details = {
        "comparisons": str(Path(comparisons).resolve()),
        "votes": str(people),
        "command": command,
        "have": progress._asdict(),
        "min_votes": need,
    }
    raise WaitingForLabels(message, details)


def gold_share(pairs: list[dict]) -> float:
    """Share of lab pairs whose chosen answer has the higher gold reward (pairs of equal gold left out)."""
    gaps = [lab.gold_reward(p["prompt"], p["chosen"]) - lab.gold_reward(p["prompt"], p["rejected"]) for p in pairs]
    decided = [g for g in gaps if g != 0]
    return sum(g > 0 for g in decided) / len(decided) if decided else float("nan")


def gold_labelled(pairs: list[dict]) -> list[dict]:
    """Lab pairs relabelled by the gold reward (a soft label ``p`` follows the swap); pairs of equal gold dropped."""
    out = []
    for p in pairs:
        gap = lab.gold_reward(p["prompt"], p["chosen"]) - lab.gold_reward(p["prompt"], p["rejected"])
        if gap > 0:
            out.append(p)
        elif gap < 0:
            swapped = {**p, "chosen": p["rejected"], "rejected": p["chosen"]}
            out.append(swapped | ({"p": 1.0 - p["p"]} if "p" in p else {}))
    return out


# ------------------------------------------------------------------------------------------ reward model
def stage_reward(ctx: StageContext) -> tuple[dict, dict]:
    return train_reward(ctx, ctx.outputs["sft"]["model_dir"], "preferences", "reward")


def train_reward(ctx: StageContext, start: str, preferences: str, stage: str) -> tuple[dict, dict]:
    """The reward model trained from ``start`` (the SFT model, or a round's last reward model) on the training pairs
    of stage ``preferences``, evaluated on its held-out ones, into stage ``stage``'s folder."""
    cfg, prefs = ctx.cfg, ctx.outputs[preferences]
    train = read_jsonl(prefs["train"])
    held_out = read_jsonl(prefs["eval"]) or None
    # What the reward trainer reads: a ranking's pairs share a ``group`` (K-wise loss), a vote margin is TRL's margin,
    # ``p`` the probability that chosen is better (reward.soft_labels).
    keep = ("prompt", "chosen", "rejected", "group", "margin", "p")
    train = [{k: r[k] for k in keep if k in r} for r in train]
    held_out = None if held_out is None else [{k: r[k] for k in keep if k in r} for r in held_out]
    result = run_reward(
        start, train, cfg.trainer_config("reward", stage), eval_dataset=held_out, preset=cfg.model.preset
    )
    if ctx.is_main:
        write_json(ctx.dir(stage) / "log_history.json", result.log_history)
    keep = ("eval_accuracy_before", "eval_accuracy", "train_loss", "train_runtime")
    metrics = {k: v for k, v in result.metrics.items() if k in keep or k.split("/")[-1] in keep}  # member_k/...
    return {"model_dir": str(result.model_dir)}, metrics


def evaluate_rm(cfg, model_dir: str, pairs: list[dict], folder: Path):
    """``(report, ensemble)``: a reward model (or ensemble: each member's report written under ``folder``, with
    ``ensemble.json``; ``ensemble`` is None for one model) scored on held-out ``pairs``, loaded as RL will use it
    (4-bit under qlora), on the GPU when there is one, truncated as it was trained."""
    max_length = cfg.trainer_config("reward").max_length
    if read_ensemble(model_dir) is None:
        model, tokenizer = load_scorer(model_dir, cfg.model.preset)
        return evaluate_reward_model(model, tokenizer, pairs, max_length=max_length, device=model.device), None
    scorer = load_reward_function(model_dir, cfg.model.preset)
    place_reward_function(scorer, detect_hardware().device)
    ensemble = evaluate_ensemble(scorer, pairs, max_length=max_length)
    for k, member in enumerate(ensemble.members):
        write_report(member, folder / MEMBER_DIR.format(k=k))
    write_json(folder / "ensemble.json", ensemble.to_dict())
    return ensemble.ensemble, ensemble


def gate_metrics(cfg, report, ensemble, folder: Path) -> dict[str, Any]:
    """The gate's verdict on ``report`` (written with it into ``folder``) and rm_eval's metrics."""
    verdict = rm_gate(report, min_accuracy=cfg.gate.min_accuracy, max_pair_length_bias=cfg.gate.max_pair_length_bias)
    write_report(report, folder, verdict=verdict)
    metrics = {
        "accuracy": report.accuracy,
        "auc": report.auc,
        "ece": report.ece,
        "reward_mean": report.reward_mean,
        "reward_std": report.reward_std,
        "length_spearman": report.length_spearman,
        "gate_passed": verdict.passed,
        "gate_summary": verdict.summary,
        "gate_reasons": verdict.reasons,
    }
    if ensemble is not None:
        metrics["member_accuracy"] = [m.accuracy for m in ensemble.members]
        metrics["member_auc"] = [m.auc for m in ensemble.members]
        metrics.update({f"ensemble_{k}": v for k, v in ensemble.disagreement.items()})
    return metrics


def stage_rm_eval(ctx: StageContext) -> tuple[dict, dict]:
    pairs = read_jsonl(ctx.outputs["preferences"]["eval"])
    if not pairs:
        raise DataError("no held-out preference pairs to evaluate the reward model on; set data.eval_fraction > 0")
    report, ensemble = evaluate_rm(ctx.cfg, ctx.outputs["reward"]["model_dir"], pairs, ctx.dir("rm_eval"))
    metrics = gate_metrics(ctx.cfg, report, ensemble, ctx.dir("rm_eval"))
    ctx.say(
        f"[rm_eval] accuracy {report.accuracy:.3f} on {len(pairs)} held-out pairs; gate: {metrics['gate_summary']}"
    )
    return {"report_dir": str(ctx.dir("rm_eval"))}, metrics  # the rl stage applies the gate (DPO does not need it)


# ------------------------------------------------------------------------------------------ RL
def check_gate(ctx: StageContext, rm_eval: str = "rm_eval") -> list[str]:
    """Stop before an algorithm that optimises the reward model when rm_eval's gate (stage ``rm_eval``'s) failed
    (unless overridden). Returns what the RL stage skips because of it (DPO runs on the pairs: the failed gate is only
    noted)."""
    cfg, rm = ctx.cfg, ctx.outputs[rm_eval]["metrics"]
    if rm.get("gate_passed", True):
        return []
    if cfg.rl.algorithm not in USES_REWARD_MODEL:
        return ["the reward-model gate (failed): DPO does not optimise the reward model, only the evaluation uses it"]
    if not cfg.gate.override:
        raise GateFailed(
            f"reward-model gate failed: {rm.get('gate_summary', '')}; set gate.override: true to run "
            f"{cfg.rl.algorithm} anyway, or rl.algorithm: dpo (it trains on the pairs, not on the reward model)"
        )
    return []


def stage_rl(ctx: StageContext) -> tuple[dict, dict]:
    return run_rl(ctx, RLStage())


@dataclasses.dataclass(frozen=True)
class RLStage:
    """Which stages an RL stage reads and writes: the pipeline's (the defaults) or a round's. ``start``: the stage
    whose model the policy starts from (the reference, the KL leash, is always the SFT model). DPO trains on
    ``dpo_pairs`` (a pairs file; None: the preferences stage's training pairs) and reports its implicit reward on
    stage ``preferences``' held-out pairs."""

    stage: str = "rl"
    reward: str = "reward"
    rm_eval: str = "rm_eval"
    start: str = "sft"
    preferences: str = "preferences"
    dpo_pairs: str | None = None


def run_rl(ctx: StageContext, names: RLStage) -> tuple[dict, dict]:
    """The RL stage ``names.stage``: the configured algorithm, monitors on, the healthy model returned."""
    cfg, algorithm = ctx.cfg, ctx.cfg.rl.algorithm
    skipped = check_gate(ctx, names.rm_eval)
    monitor = MonitorConfig(**cfg.trl["monitor"])
    if cfg.data.prompts == LAB:  # log gold beside proxy so over-optimisation shows in the health timeline and plot
        monitor = dataclasses.replace(monitor, health_extra_keys=[*monitor.health_extra_keys, lab.GOLD_KEY])
    if algorithm == "dpo":
        result, extra, notes = _run_dpo(ctx, monitor, names)
    else:
        result, extra, notes = _run_on_prompts(ctx, monitor, names)
    log = [row for row in result.log_history if "train_runtime" not in row]
    if ctx.is_main:
        write_json(ctx.dir(names.stage) / "log_history.json", [_rename_gold(row) for row in log])
    kls = [m["kl"] for m in map(read_metrics, log) if m and "kl" in m]  # nats per sequence for every algorithm
    health = _read_health(ctx.dir(names.stage))
    metrics = {
        "algorithm": algorithm,
        "final_kl": kls[-1] if kls else None,
        "alerts": result.metrics.get("monitor_alerts", len(health)),
        "alert_messages": health,
        "train_runtime": result.metrics.get("train_runtime"),
        "skipped": skipped + notes,
        # which weights model/ holds: after a stop alert the average of the last healthy checkpoints, else the final
        **{
            k: result.metrics.get(k)
            for k in (
                "stop_step",
                "last_healthy_step",
                "returned_step",
                "averaged_steps",
                "returned_reason",
                "no_harm",
            )
        },
        **extra,
    }
    return {"model_dir": str(result.model_dir), **_returned_adapter(ctx, names, result, metrics)}, metrics


def _chains_adapters(cfg) -> bool:
    """Whether the RL stages carry a LoRA adapter from round to round (LoRA presets; best-of-N merges a fresh adapter
    every round of its own instead)."""
    return cfg.model.preset != "full" and cfg.rl.algorithm != "best_of_n"


def _returned_adapter(ctx: StageContext, names: RLStage, result, metrics: dict) -> dict[str, str]:
    """``{"adapter": folder}``: the adapter that on the SFT model makes the returned policy (a round under LoRA
    trains it further) -- the run's own unless it returned its starting policy (then the start's); ``{}`` when there
    is none (full fine-tuning, best-of-N, or the returned policy is the SFT model itself)."""
    if not _chains_adapters(ctx.cfg):
        return {}
    own = Path(result.model_dir).parent / ADAPTER_SUBDIR
    if metrics.get("returned_step") != 0 and own.is_dir():
        return {"adapter": str(own)}
    start = ctx.outputs[names.start]
    return {"adapter": start["adapter"]} if start.get("adapter") else {}


def _start(ctx: StageContext, names: RLStage) -> tuple[str, dict[str, str]]:
    """``(model the policy loads, keyword arguments of the RL run)``: the SFT model as it is; in a round, full
    fine-tuning from the last policy with the SFT model as the reference, LoRA from the SFT model with the last round's
    adapter trained further (the reference: the adapter turned off, i.e. the SFT model)."""
    sft_model, start = ctx.outputs["sft"]["model_dir"], ctx.outputs[names.start]
    if start["model_dir"] == sft_model:
        return sft_model, {}
    if not _chains_adapters(ctx.cfg):
        return start["model_dir"], {"reference_model": sft_model}
    if not start.get("adapter"):  # the last round returned the SFT model: a fresh adapter, as round 1
        return start["model_dir"], {}
    return sft_model, {"start_adapter": start["adapter"], "start_model": start["model_dir"]}


def _run_on_prompts(ctx: StageContext, monitor: MonitorConfig, names: RLStage):
    """PPO, GRPO, RLOO and rejection sampling: RL prompts, the reward model, gold logged beside it in the lab. A
    round's policy starts from the last round's, its reference (the KL leash; best-of-N: the KL measured) still the
    SFT model."""
    cfg, algorithm = ctx.cfg, ctx.cfg.rl.algorithm
    with ctx.main_process_first():
        prompts = [{"prompt": p} for p in rl_prompts(ctx)[0]]
    rm = ctx.outputs[names.rm_eval]["metrics"]
    reward_model = ctx.outputs[names.reward]["model_dir"]
    gold = [lab.lab_gold] if cfg.data.prompts == LAB else None  # the gold reward, logged and never optimised
    config, run = cfg.trainer_config(algorithm, names.stage), ALGORITHMS[algorithm].runner()
    start, reference = _start(ctx, names)  # a round: the leash stays at the SFT model
    if algorithm == "best_of_n":
        result = run(
            start,
            prompts,
            config,
            reward_model=reward_model,
            preset=cfg.model.preset,
            monitor_config=monitor,
            metric_funcs=gold,
            **reference,
        )
        notes = [
            "reward normalisation (rm_eval's reward_mean / reward_std): the best sample of a prompt is picked by rank",
            "a KL penalty: the number of rounds is the leash; each round's KL to the SFT model is measured",
        ]
        return result, {"rounds_done": result.metrics["rounds_done"]}, notes
    common = {
        "reward_model": reward_model,
        "preset": cfg.model.preset,
        "monitor_config": monitor,
        "reward_mean": rm.get("reward_mean"),
        "reward_std": rm.get("reward_std"),
        "reward_aggregation": cfg.rl.reward_aggregation,
        "reward_ensemble_coef": cfg.rl.reward_ensemble_coef,
    }
    if algorithm == "ppo":
        result = run(start, prompts, config, layout=cfg.rl.layout, metric_funcs=gold, **common, **reference)
    else:
        weights = [1.0, 0.0] if gold else None  # gold is logged, never optimised
        result = run(start, prompts, config, reward_funcs=gold, reward_weights=weights, **common, **reference)
    return result, {}, []


def _run_dpo(ctx: StageContext, monitor: MonitorConfig, names: RLStage):
    """DPO on the reward stage's (filtered) training pairs (a round's: ``names.dpo_pairs``), from ``names.start``
    with the SFT model as the reference; its implicit reward reported on the held-out pairs."""
    cfg = ctx.cfg
    columns = ("prompt", "chosen", "rejected")
    source = names.dpo_pairs or ctx.outputs[names.preferences]["train"]
    train = [{k: r[k] for k in columns} for r in read_jsonl(source)]
    config = cfg.trainer_config("dpo", names.stage)
    sft_model = ctx.outputs["sft"]["model_dir"]
    start, reference = _start(ctx, names)  # a round: the reference stays the SFT model
    run = ALGORITHMS["dpo"].runner()
    result = run(start, train, config, preset=cfg.model.preset, monitor_config=monitor, **reference)
    extra: dict[str, Any] = {}
    held_out = read_jsonl(ctx.outputs[names.preferences]["eval"])
    if held_out and ctx.is_main:
        report = evaluate_implicit_reward(
            result.model_dir,
            sft_model,
            held_out,
            beta=config.beta,
            max_length=config.max_length,
            preset=cfg.model.preset,
        )
        write_report(report, ctx.dir(names.stage) / "implicit_reward")
        extra = {
            "implicit_accuracy": report.accuracy,
            "implicit_auc": report.auc,
            "implicit_ece": report.ece,
            "implicit_length_spearman": report.length_spearman,
        }
        ctx.say(f"[rl] DPO's implicit reward: accuracy {report.accuracy:.3f} on {len(held_out)} held-out pairs")
    notes = [
        "RL prompts and the reward model in training: DPO fits the preference pairs (the reward stage's training "
        "pairs); the reward model only scores the final evaluation",
        "reward normalisation (rm_eval's reward_mean / reward_std): no reward is optimised",
        "the gold reward in the training log: DPO samples nothing to score (the final evaluation has it)",
    ]
    return result, extra, notes


def _rename_gold(row: dict) -> dict:
    return {("lab/gold" if k == lab.GOLD_KEY else k): v for k, v in row.items()}


def _read_health(run_dir: Path) -> list[str]:
    """Alert messages from the monitor's health timeline, in order (each message names its step)."""
    path = run_dir / "health.jsonl"
    if not path.exists():
        return []
    out = []
    for row in read_jsonl(path):
        for alert in row.get("alerts", []):
            message = alert.get("message", alert) if isinstance(alert, dict) else alert
            step = f"step {row.get('step')}: "
            out.append(message if str(message).startswith(step) else step + str(message))
    return out


# ------------------------------------------------------------------------------------------ final evaluation
def eval_sampling(cfg) -> tuple[float, int]:
    """``(temperature, max_new_tokens)`` of the final evaluation: ``rl.eval_temperature`` / ``rl.max_new_tokens``, else
    as the RL stage sampled: the algorithm's :attr:`~rlhfkit.rl.algorithms.Algorithm.length_field` and
    :attr:`~rlhfkit.rl.algorithms.Algorithm.eval_temperature` (else its config's ``temperature``)."""
    algorithm = ALGORITHMS[cfg.rl.algorithm]
    config = cfg.trainer_config(algorithm.name)
    temperature = cfg.rl.eval_temperature or algorithm.eval_temperature or config.temperature
    return float(temperature), int(cfg.rl.max_new_tokens or getattr(config, algorithm.length_field))


def stage_final_eval(ctx: StageContext) -> tuple[dict, dict]:
    """Both policies (the last round's RL policy, the SFT one) on the held-out prompts, measured the same way
    (:func:`rlhfkit.rl.policy_eval.evaluate_policy`):
    reward-model score (an ensemble's: its members' mean standardised score), the lab's gold reward, length, and the
    RL policy's KL to the SFT policy (nats/sequence). With a gold reward, ``gold_gain`` and ``gold_gain_sem``: the
    mean and standard error of the per-prompt gold difference RL - SFT (:func:`rlhfkit.rl.policy_eval.paired_gain`).
    The RL policy's win rate over the SFT policy, prompt by prompt, ties one half, with its 95% interval and the
    length-controlled rate: by gold (``win_rate_gold``, ``_low``, ``_high``, ``_ties``, ``lc_win_rate_gold`` ...) and
    by the reward model (``win_rate_rm`` ...) (:func:`rlhfkit.rl.policy_eval.paired_win_rates`).
    ``samples.jsonl`` holds each prompt's responses and scores."""
    cfg = ctx.cfg
    prompts = rl_prompts(ctx)[1]
    temperature, max_new = eval_sampling(cfg)
    rm, rm_tokenizer = load_scorer(ctx.latest("reward")["model_dir"], cfg.model.preset)  # the last round's
    sft, sft_tokenizer = load_for_sampling(ctx.outputs["sft"]["model_dir"], cfg.model.preset)
    policy, tokenizer = load_for_sampling(ctx.latest("rl")["model_dir"], cfg.model.preset)
    common = {
        "reward_model": rm,
        "reward_tokenizer": rm_tokenizer,
        "max_new_tokens": max_new,
        "temperature": temperature,
        "seed": cfg.seed,
        "metric_fn": lab.lab_gold if cfg.data.prompts == LAB else None,
    }
    before = evaluate_policy(sft, sft_tokenizer, prompts, **common)
    after = evaluate_policy(policy, tokenizer, prompts, reference=sft, **common)
    metrics: dict[str, Any] = {"n_prompts": len(prompts), "temperature": temperature, "max_new_tokens": max_new}
    metrics.update({**before.metrics("sft"), **after.metrics("rl")})
    metrics.pop("kl_sft"), metrics.pop("kl_sem_sft")  # the SFT policy is the reference
    rows = [{"prompt": p, "sft": s, "rl": r} for p, s, r in zip(prompts, before.responses, after.responses)]
    per_prompt = {
        "proxy_sft": before.proxy_values,
        "proxy_rl": after.proxy_values,
        "gold_sft": before.gold_values,
        "gold_rl": after.gold_values,
    }
    for key, values in per_prompt.items():
        for row, value in zip(rows, values):  # per-prompt scores (no gold without a gold reward)
            row[key] = value
    if after.gold is not None:  # paired: the same prompts, so the SEM is that of the per-prompt differences
        metrics["gold_gain"], metrics["gold_gain_sem"] = paired_gain(before.gold_values, after.gold_values)
    metrics.update(paired_win_rates(before, after))
    judge = "gold" if after.gold is not None else "rm"
    wins = f"win rate {rate_text(metrics, f'win_rate_{judge}')}"
    if after.gold is not None:
        ctx.say(
            f"[final_eval] gold reward: SFT {before.gold:.3f} -> RL {after.gold:.3f}, gain "
            f"{metrics['gold_gain']:+.3f} ± {metrics['gold_gain_sem']:.3f}, {wins} (KL {after.kl:.2f} nats)"
        )
    else:
        ctx.say(
            f"[final_eval] reward-model score: SFT {before.proxy:.3f} -> RL {after.proxy:.3f}, {wins} "
            f"(KL {after.kl:.2f} nats)"
        )
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
