"""Best-of-N, the simplest use of a reward model, two ways.

**Decoding baseline** (:func:`best_of_n_curve`): sample N responses per prompt from a policy and keep the reward
model's favourite. Its gold and proxy reward as a function of N (1, 2, 4, 8, 16, ...) sit on the same reward-vs-KL
axes as RL through the analytic KL of best-of-N, ``log N - (N - 1) / N`` nats (:func:`analytic_kl`; Stiennon et al.
2020, app. G.3; Beirami et al. 2024 show it is an upper bound on the true KL). From ``M`` samples per prompt every
``N <= M`` is estimated without bias as the expected best of a random ``N``-subset (:func:`expected_best_of_n`, the
estimator of Nakano et al. 2021, WebGPT app. H): the sample ranked ``i``-th lowest by the reward model is the pick of
``C(i, N - 1) / C(M, N)`` of the subsets. The proxy curve is non-decreasing in N by construction; the gold curve shows
where the reward model stops being right about what it prefers (:func:`where_gold_stops`).

**Rejection-sampling fine-tuning** (:func:`run_best_of_n`, ``rl.algorithm: best_of_n``): for a set number of rounds,
sample N responses per prompt from the current policy, keep the reward model's favourite per prompt, and fine-tune
on them with TRL's ``SFTTrainer`` (Llama 2's rejection sampling; the "keep best-of-N, then SFT" baseline). No KL
penalty: the number of rounds and steps is the leash, and each round's KL to the SFT model is measured on its samples
(:func:`rlhfkit.models.sampling.sequence_kl`) and fed to the monitors with the round's proxy reward, length and
truncation.

Each round writes ``<output_dir>/round-<r>/``: ``samples.jsonl`` (every sample, its score, which were kept),
``stats.jsonl`` (the round's log) and ``model/``; ``round-<R+1>/`` holds the samples that measure the final policy
(nothing is trained on them). A rerun skips finished rounds and resumes an interrupted one from its checkpoints on
the same samples. The final policy is ``<output_dir>/model`` (hard links to the last round's files). Under several
processes the main one samples and writes, and every process fine-tunes (DDP).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.io import read_jsonl, write_jsonl
from rlhfkit.models.loading import MODEL_SUBDIR, copy_model
from rlhfkit.models.sampling import Samples, generate, load_for_sampling, sequence_kl
from rlhfkit.models.scoring import REWARD_MODEL_NAME, load_scorer, proxy_scores
from rlhfkit.monitors import HealthMonitor, MonitorConfig
from rlhfkit.rl.configs import BestOfNConfig
from rlhfkit.runs import RunResult, remove_checkpoints
from rlhfkit.sft import run_sft

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ the decoding baseline
def analytic_kl(n: int) -> float:
    """KL of best-of-``n`` sampling to the policy it samples from, nats per sequence: ``log n - (n - 1) / n``."""
    if n < 1:
        raise ConfigError(f"n={n}: best-of-N needs N >= 1")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(m: int, n: int) -> np.ndarray:
    """``w[i]``: the probability that the ``i``-th lowest of ``m`` scores (0-based) is the highest of a uniformly
    random ``n``-subset, ``C(i, n - 1) / C(m, n)`` (computed in log space, exact for large ``m``)."""
    from scipy.special import gammaln

    if not 1 <= n <= m:
        raise ConfigError(f"N={n} needs 1 <= N <= {m}, the samples per prompt")
    i = np.arange(m)
    ok = i >= n - 1
    log_w = np.full(m, -np.inf)
    log_w[ok] = (
        gammaln(i[ok] + 1) - gammaln(n) - gammaln(i[ok] - n + 2) + gammaln(n + 1) + gammaln(m - n + 1) - gammaln(m + 1)
    )
    return np.exp(log_w)


def expected_best_of_n(proxy, values: dict[str, Any], ns: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-prompt expected proxy and ``values`` of the best-of-``n`` pick, for each ``n`` in ``ns``.

    Args:
        proxy: reward-model scores, shape ``(P, M)``: ``M`` samples for each of ``P`` prompts.
        values: other measures of the same samples (e.g. ``{"gold": (P, M)}``), read at the proxy's pick.
        ns: the N values, each in ``1..M``.
    Returns:
        ``{"proxy": (P, len(ns)), <name>: (P, len(ns)) ...}``; ties in the proxy go to the later sample.
    """
    proxy = np.asarray(proxy, dtype=np.float64)
    if proxy.ndim != 2:
        raise ConfigError(f"proxy scores must have shape (prompts, samples), got {proxy.shape}")
    order = np.argsort(proxy, axis=1, kind="stable")
    weights = np.stack([best_of_n_weights(proxy.shape[1], n) for n in ns], axis=1)  # (M, len(ns))
    out = {"proxy": np.take_along_axis(proxy, order, axis=1) @ weights}
    for name, value in values.items():
        value = np.asarray(value, dtype=np.float64)
        if value.shape != proxy.shape:
            raise ConfigError(f"{name} has shape {value.shape}, the proxy scores {proxy.shape}; give one per sample")
        out[name] = np.take_along_axis(value, order, axis=1) @ weights
    return out


@dataclass
class BestOfNCurve:
    """The best-of-N curve: one row per N with ``n``, ``kl`` (analytic, nats per sequence), ``proxy`` and, when a
    gold reward is known, ``gold`` (means over prompts) with their standard errors ``proxy_sem`` / ``gold_sem``.
    ``per_prompt`` keeps the per-prompt estimates (``{"proxy": (P, len(ns)), ...}``) for paired comparisons."""

    rows: list[dict[str, float]]
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "gold_stops": where_gold_stops(self)}


def curve_from_scores(proxy, ns: Sequence[int], gold=None) -> BestOfNCurve:
    """A :class:`BestOfNCurve` from ``(P, M)`` proxy (and gold) scores of ``M`` samples per prompt."""
    per_prompt = expected_best_of_n(proxy, {} if gold is None else {"gold": gold}, ns)
    rows = []
    for j, n in enumerate(ns):
        row = {"n": int(n), "kl": analytic_kl(n)}
        for name, est in per_prompt.items():
            row[name] = float(est[:, j].mean())
            row[f"{name}_sem"] = float(est[:, j].std(ddof=1) / np.sqrt(len(est))) if len(est) > 1 else float("nan")
        rows.append(row)
    return BestOfNCurve(rows=rows, per_prompt=per_prompt)


def where_gold_stops(curve: BestOfNCurve) -> dict[str, Any]:
    """Where gold stops following the proxy: the N with the highest gold, and how much gold the largest N lost
    against it (``drop``, paired over prompts, with its standard error). ``stops_at`` is that N when the drop is
    larger than twice its standard error (gold then falls while the proxy still rises), else None."""
    if "gold" not in curve.per_prompt:
        return {}
    gold = curve.per_prompt["gold"]
    ns = [r["n"] for r in curve.rows]
    peak = int(np.argmax(gold.mean(axis=0)))
    diff = gold[:, peak] - gold[:, -1]
    sem = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    drop = float(diff.mean())
    proxy = curve.per_prompt["proxy"].mean(axis=0)
    return {
        "gold_peak_n": ns[peak],
        "gold_peak": float(gold[:, peak].mean()),
        "drop_at_largest_n": drop,
        "drop_sem": sem,
        "stops_at": ns[peak] if peak < len(ns) - 1 and drop > 2 * sem else None,
        "proxy_monotone": bool(np.all(np.diff(proxy) >= -1e-12)),
    }


def best_of_n_curve(
    model,
    tokenizer,
    reward_model,
    reward_tokenizer,
    prompts: Sequence,
    *,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    metric_fn: Callable | None = None,
    batch_size: int = 64,
) -> BestOfNCurve:
    """Sample ``max(ns)`` responses per prompt from ``model``, score them with the reward model (raw scores, as the
    final evaluation reports them; :func:`rlhfkit.models.scoring.proxy_scores`, so an ensemble's scorer with
    ``reward_tokenizer`` None works too) and, with ``metric_fn(prompts, completions) -> list[float]`` (e.g.
    :func:`rlhfkit.lab.lab_gold`), a gold reward; return the best-of-N curve over ``ns``."""
    ns = sorted({int(n) for n in ns})
    m = ns[-1]
    samples = generate(
        model,
        tokenizer,
        list(prompts),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        num_samples=m,
        batch_size=batch_size,
    )
    proxy = proxy_scores(reward_model, reward_tokenizer, samples)
    gold = None if metric_fn is None else np.asarray(metric_fn(samples.prompts, samples.texts), dtype=np.float64)
    shape = (len(prompts), m)
    return curve_from_scores(proxy.reshape(shape), ns, None if gold is None else gold.reshape(shape))


def _round_prompts(prompts: list, config: BestOfNConfig, r: int) -> list:
    """Round ``r``'s prompts (1-based): a slice of ``prompts_per_round`` consecutive ones, wrapping around."""
    k = config.prompts_per_round or len(prompts)
    start = (r - 1) * k
    return [prompts[(start + j) % len(prompts)] for j in range(k)]


def _sample_round(policy_dir: str, sft_dir: str, reward_model: str, prompts: list, config, preset, seed, metric_funcs):
    """Sample the round's responses from ``policy_dir``, score them, and measure the policy's KL to the SFT model.

    The models are loaded here and freed before the round's fine-tuning, so that it has the memory to itself.
    Returns ``(rows, stats)``: every sample with its score and ``kept`` flag, and the round's log.
    """
    model, tokenizer = load_for_sampling(policy_dir, preset)
    samples = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.max_completion_length,
        temperature=config.temperature,
        seed=seed,
        num_samples=config.num_samples,
        batch_size=config.generation_batch_size,
    )
    kl = 0.0  # the SFT model itself
    if str(policy_dir) != str(sft_dir):
        reference = load_for_sampling(sft_dir, preset)[0]
        kl = sequence_kl(model, reference, samples, temperature=config.temperature).mean
        del reference
    del model
    rm, rm_tokenizer = load_scorer(str(reward_model), preset)
    scores = proxy_scores(rm, rm_tokenizer, samples)
    del rm
    _free_memory()
    rows = _select(samples, scores, metric_funcs)
    return rows, _round_stats(samples, scores, kl, rows, metric_funcs)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _select(samples: Samples, scores: np.ndarray, metric_funcs) -> list[dict]:
    """Every sample with its score and ``kept`` (the highest-scoring one of its prompt; ties: the first)."""
    n = samples.num_samples
    best = scores.reshape(-1, n).argmax(axis=1)
    rows = []
    for i, (prompt, text, score, done) in enumerate(zip(samples.prompts, samples.texts, scores, samples.finished)):
        rows.append(
            {
                "prompt": prompt,
                "completion": text,
                "score": float(score),
                "finished": bool(done),
                "kept": bool(i % n == best[i // n]),
            }
        )
    for fn in metric_funcs:
        for row, value in zip(rows, fn([r["prompt"] for r in rows], [r["completion"] for r in rows])):
            row[fn.__name__] = float(value)
    return rows


def _round_stats(samples: Samples, scores, kl: float, rows: list[dict], metric_funcs) -> dict[str, float]:
    """The round's log, in TRL's GRPO/RLOO names so the monitors read it (:func:`rlhfkit.monitors.read_metrics`):
    ``kl`` per token (the monitors multiply it by the mean length back to nats per sequence)."""
    length = samples.mean_length()
    kept = [r for r in rows if r["kept"]]
    stats = {
        "reward": float(np.mean(scores)),
        "reward_std": float(np.std(scores)),
        f"rewards/{REWARD_MODEL_NAME}/mean": float(np.mean(scores)),
        "kept/reward_model/mean": float(np.mean([r["score"] for r in kept])),
        "kl": kl / length if length else 0.0,
        "kl_per_sequence": kl,
        "completions/mean_length": length,
        "completions/clipped_ratio": 1.0 - float(np.mean(samples.finished)),
    }
    for fn in metric_funcs:
        stats[f"rewards/{fn.__name__}/mean"] = float(np.mean([r[fn.__name__] for r in rows]))
        stats[f"kept/{fn.__name__}/mean"] = float(np.mean([r[fn.__name__] for r in kept]))
    return stats


def run_best_of_n(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config: BestOfNConfig,
    *,
    reward_model: str | os.PathLike,
    preset="full",
    monitor_config: MonitorConfig | None = None,
    metric_funcs: Sequence[Callable] | None = None,
    reference_model: str | os.PathLike | None = None,
) -> RunResult:
    """Rejection-sampling fine-tuning: ``config.rounds`` x (sample N per prompt, keep the reward model's best, SFT).

    Args:
        model_name_or_path: the SFT model: the first round samples it, and every round's KL is measured to it.
        train_dataset: prompts (strings or chat messages), or rows with a ``prompt`` column.
        config: a :class:`BestOfNConfig` (build it with :func:`best_of_n_config`).
        reward_model: the reward stage's model folder, loaded as the RL stages load it (4-bit under ``qlora``).
        preset: ``full`` | ``lora`` | ``qlora``: how each round's fine-tuning and sampling load the policy.
        monitor_config: the monitors read one log per round (proxy reward, KL, length, truncation; step ``k`` is the
            policy after ``k`` rounds); a ``stop`` alert ends the rounds and the result is the policy after the last
            healthy step's rounds (``round-<k>/model``; 0: the SFT model). ``reward_kl_race`` is off: a step is a
            round, not an optimiser step.
        metric_funcs: functions logged beside the reward model (e.g. the lab's gold reward), never used to select.
        reference_model: the model each round's KL is measured to when the first round samples another one
            (iterative RLHF: ``model_name_or_path`` is round r-1's policy, this the SFT model); a stop before the
            first round returns ``model_name_or_path``.
    Returns:
        a :class:`~rlhfkit.runs.RunResult` (trainer ``best_of_n``) whose ``log_history`` has one row per round
        (``step`` = round) plus one for the final policy, and ``metrics`` with ``rounds_done``, ``monitor_alerts``
        and, as the other RL runs (:func:`rlhfkit.rl.healthy.return_healthy`), ``stop_step``, ``last_healthy_step``,
        ``returned_step`` (the rounds behind the returned policy) and ``returned_reason``.
    """
    from accelerate import PartialState
    from transformers import TrainerControl, TrainerState

    metric_funcs = list(metric_funcs or [])
    prompts = [row["prompt"] if isinstance(row, dict) else row for row in train_dataset]
    if not prompts:
        raise ConfigError("run_best_of_n needs prompts; train_dataset is empty")
    out, start, sft_dir = Path(config.output_dir), str(model_name_or_path), str(reference_model or model_name_or_path)
    process = PartialState()  # several processes: the main one samples and writes, all of them fine-tune (DDP)
    # reward_kl_race judges KL gained per optimiser step; here a logged step is a round of many: it does not apply.
    # A stop returns one round's policy, not an average (consecutive rounds are many updates apart)
    monitor_config = dataclasses.replace(
        monitor_config or MonitorConfig(), reward_kl_race_action="off", healthy_average=1
    )
    monitor = HealthMonitor(monitor_config, checkpoint_name=f"round-{{}}/{MODEL_SUBDIR}")
    state, control = TrainerState(is_world_process_zero=process.is_main_process), TrainerControl()
    monitor.on_train_begin(config, state, control)
    policy, history = start, []
    for r in range(1, config.rounds + 2):  # round R + 1's samples measure the final policy (nothing is trained)
        round_dir = out / f"round-{r}"
        round_prompts = _round_prompts(prompts, config, r)
        rows, stats = _sampled_round(
            round_dir, policy, sft_dir, reward_model, round_prompts, config, preset, r, metric_funcs, process
        )
        state.global_step = r - 1  # the log describes the policy after r - 1 rounds
        history.append({**stats, "step": r - 1})
        monitor.on_log(config, state, control, logs=dict(stats))
        logger.info(
            "best_of_n: policy after %d round(s): reward model %.3f, KL %.3f nats/seq",
            r - 1,
            stats["reward"],
            stats["kl_per_sequence"],
        )
        if r > config.rounds or control.should_training_stop:
            break
        if not (round_dir / MODEL_SUBDIR).exists():
            kept = [{"prompt": row["prompt"], "completion": _as_completion(row)} for row in rows if row["kept"]]
            round_config = dataclasses.replace(config, output_dir=str(round_dir))
            run_sft(policy, kept, round_config, preset=preset)
            if process.is_main_process:
                remove_checkpoints(round_dir)
        policy = str(round_dir / MODEL_SUBDIR)
        _free_memory()
    monitor.on_train_end(config, state, control)
    returned, reason = state.global_step, "no stop alert: the final weights"
    if monitor.stop_step is not None:  # the policy after the last healthy step's rounds (0: the SFT model)
        returned, reason = monitor.returned_step, monitor.returned_reason
        policy = str(out / f"round-{returned}" / MODEL_SUBDIR) if returned else start
        logger.warning("monitor: %s", reason)
    if process.is_main_process:
        copy_model(policy, out / MODEL_SUBDIR)
    process.wait_for_everyone()
    metrics = {
        "rounds_done": state.global_step,
        "monitor_alerts": len(monitor.alerts),
        "stop_step": monitor.stop_step,
        "last_healthy_step": monitor.last_healthy_step,
        "returned_step": returned,
        "returned_reason": reason,
    }
    return RunResult(trainer="best_of_n", model_dir=out / MODEL_SUBDIR, metrics=metrics, log_history=history)


def _sampled_round(round_dir: Path, policy, sft_dir, reward_model, prompts, config, preset, r, metric_funcs, process):
    """Round ``r``'s samples and stats: sampled and written by the main process, or read back when a rerun finds
    them (``stats.jsonl``, written last, means the round sampled)."""
    if not (round_dir / "stats.jsonl").exists():
        if process.is_main_process:
            rows, stats = _sample_round(
                policy, sft_dir, reward_model, prompts, config, preset, config.seed + r, metric_funcs
            )
            write_jsonl(round_dir / "samples.jsonl", rows)
            write_jsonl(round_dir / "stats.jsonl", [stats])
        process.wait_for_everyone()
    return read_jsonl(round_dir / "samples.jsonl"), read_jsonl(round_dir / "stats.jsonl")[0]


def _as_completion(row: dict):
    """The kept response as SFT data: text, or the assistant message for a chat prompt."""
    if isinstance(row["prompt"], str):
        return row["completion"]
    return [{"role": "assistant", "content": row["completion"]}]
