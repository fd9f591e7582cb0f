"""``rlhfkit compare``: the alignment algorithms on the same data, side by side, measured the same way.

:func:`run_compare` runs the pipeline's shared stages once -- SFT, preference data, reward model, its evaluation --
then each algorithm (``ppo``, ``grpo``, ``rloo``, ``dpo``, ``best_of_n``) as a pipeline run of its own whose manifest
reuses those stages, and finally the best-of-N decoding curve of the SFT policy. Every final policy is evaluated on
the same held-out prompts at the same temperature and length (:func:`rlhfkit.rl.policy_eval.evaluate_policy`:
reward-model score, gold reward in the lab, KL to the SFT policy in nats per sequence on the same samples; its win
rate over the SFT policy, prompt by prompt, by gold and by the reward model: :mod:`rlhfkit.rl.winrate`). Layout::

    <output_dir>/manifest.json, sft/, preferences/, reward/, rm_eval/   the shared stages
    <output_dir>/<algorithm>/          rl/, final_eval/, report.md, manifest.json (shared stages recorded, not rerun)
    <output_dir>/<algorithm>/compare_run.json   wall time and peak memory of its RL stage, measured when it ran
    <output_dir>/best_of_n_curve.json  gold and proxy of best-of-N from the SFT policy vs N, with the analytic KL
    <output_dir>/compare.json, compare.md, compare.png

Everything resumes: a rerun skips what is done (the shared stages, each finished algorithm, the curve) and resumes an
interrupted algorithm from its checkpoints, so running the same command twice trains nothing the second time. What
changed since is redone, and said: an algorithm whose section changed is retrained alone; a changed shared stage
(say the reward section) redoes it, the stages after it and every algorithm.
Wall time and peak memory are those of an algorithm's RL stage (its training), measured in this process: peak GPU
memory allocated by torch on a GPU, else the process's peak resident memory (``VmHWM``, reset before each algorithm
on Linux), which on a CPU includes Python and the libraries (~0.6 GB here) and so mostly shows differences.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.core.io import pyplot, save_figure, write_json, write_text
from rlhfkit.data.tables import LAB
from rlhfkit.models.sampling import load_for_sampling
from rlhfkit.models.scoring import load_scorer
from rlhfkit.pipeline.config import RL_ALGORITHMS, PipelineConfig, load_config, stage_digests
from rlhfkit.pipeline.context import GateFailed, StageContext
from rlhfkit.pipeline.manifest import Manifest, changed_keys, config_hash
from rlhfkit.pipeline.report import write_pipeline_report
from rlhfkit.pipeline.runner import run_pipeline
from rlhfkit.pipeline.stages import eval_sampling, rl_prompts
from rlhfkit.rl.best_of_n import best_of_n_curve
from rlhfkit.rl.winrate import rate_text

logger = logging.getLogger(__name__)

SHARED_STAGES = ("sft", "preferences", "reward", "rm_eval")
DEFAULT_NS = (1, 2, 4, 8, 16)
RUN_RECORD = "compare_run.json"
CURVE_FILE = "best_of_n_curve.json"


def parse_algorithms(text: str) -> list[str]:
    """``"ppo,grpo,dpo"`` -> ``["ppo", "grpo", "dpo"]``, each one of :data:`RL_ALGORITHMS`, no repeats."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in RL_ALGORITHMS]
    if unknown or not names or len(set(names)) != len(names):
        raise ConfigError(
            f"--algorithms {text!r}: give distinct names from {', '.join(RL_ALGORITHMS)}, comma-separated "
            f"(e.g. --algorithms ppo,dpo)" + (f"; unknown: {unknown}" if unknown else "")
        )
    return names


def parse_ns(text: str) -> list[int]:
    """``"1,2,4,8,16"`` -> ``[1, 2, 4, 8, 16]`` (the best-of-N curve's N values, each >= 1)."""
    try:
        ns = sorted({int(n) for n in text.split(",") if n.strip()})
    except ValueError:
        ns = []
    if not ns or ns[0] < 1:
        raise ConfigError(f"--best-of-n {text!r}: give N values >= 1, comma-separated (e.g. 1,2,4,8,16)")
    return ns


def algorithm_configs(cfg: PipelineConfig, algorithms: Sequence[str]) -> dict[str, PipelineConfig]:
    """One pipeline config per algorithm: ``<output_dir>/<algorithm>``, and one final evaluation for all (the
    temperature and length ``cfg``'s own ``rl.algorithm`` evaluates with, unless ``rl.eval_temperature`` /
    ``rl.max_new_tokens`` say otherwise). Built now, so a bad section is reported before anything runs."""
    temperature, max_new = eval_sampling(cfg)
    out = {}
    for name in algorithms:
        raw = copy.deepcopy(cfg.raw)
        raw["output_dir"] = str(cfg.output_dir / name)
        raw.setdefault("rl", {}).update(algorithm=name, eval_temperature=temperature, max_new_tokens=max_new)
        try:
            out[name] = load_config(raw)
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from e
    return out


def redo_changed(cfg: PipelineConfig, stages: Sequence[str], say: Callable[[str], None]) -> None:
    """A finished stage among ``stages`` whose config changed since it ran is forgotten, with every stage after it,
    so the next run redoes them (``rlhfkit run`` stops and asks for ``--from``; a comparison redoes what changed)."""
    manifest = Manifest(cfg.output_dir)
    for stage, (inputs, digest) in stage_digests(cfg).items():
        entry = manifest.stage(stage)
        if stage in stages and entry.get("status") == "done" and entry.get("config_hash") != digest:
            keys = changed_keys(entry.get("config", {}), inputs) or ["an earlier stage"]
            say(f"[{stage}] config changed since it ran ({', '.join(keys)}): redoing it and what follows")
            order = cfg.stages()
            manifest.invalidate_from(list(order[order.index(stage) :]))
            return


def share_stages(base: Manifest, run_dir: Path) -> None:
    """Record the shared stages in an algorithm's manifest (its pipeline then skips them and reads their outputs).
    When they changed since the algorithm last ran, its rl and final_eval stages are forgotten: they start over."""
    manifest = Manifest(run_dir)
    stale = any(manifest.stage(s) and manifest.stage(s) != base.stage(s) for s in SHARED_STAGES)
    for stage in SHARED_STAGES:
        manifest.data["stages"][stage] = copy.deepcopy(base.stage(stage))
    if stale:
        manifest.invalidate_from(["rl", "final_eval"])
    manifest.save()


class PeakMemory:
    """Peak memory of a block, in MB: torch's peak GPU allocation on CUDA, else the process's peak resident set
    (Linux: ``VmHWM``, reset on entry through ``/proc/self/clear_refs``; elsewhere the process's peak so far)."""

    def __enter__(self) -> PeakMemory:
        import torch

        self.kind, self.mb = "rss_peak", None
        if torch.cuda.is_available():
            self.kind = "cuda_allocated_peak"
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.kind = "rss_peak_since_start"
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.kind == "cuda_allocated_peak":
            self.mb = torch.cuda.max_memory_allocated() / 2**20
            return
        status = Path("/proc/self/status")
        if status.exists():
            lines = status.read_text().splitlines()
            self.mb = next((int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM")), None)
        else:  # macOS reports bytes, Linux kB
            import resource
            import sys

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024


def run_algorithm(cfg: PipelineConfig, base: Manifest, say: Callable[[str], None]) -> dict[str, Any]:
    """Run one algorithm's pipeline (reusing the shared stages); returns its compare record."""
    run_dir = cfg.output_dir
    share_stages(base, run_dir)
    redo_changed(cfg, ("rl", "final_eval"), say)  # e.g. its section was edited since the last comparison
    record_path = run_dir / RUN_RECORD
    manifest = Manifest(run_dir)
    record = _read(record_path) or {}
    try:
        if manifest.stage("rl").get("status") != "done":
            resumed = manifest.stage("rl").get("status") in ("running", "failed")
            start = time.perf_counter()
            with PeakMemory() as peak:
                run_pipeline(cfg, until="rl", say=say)
            record = {
                "wall_s": time.perf_counter() - start,
                "peak_mb": peak.mb,
                "memory": peak.kind,
                "resumed": resumed,
            }
            write_json(record_path, record)
        manifest = run_pipeline(cfg, say=say)  # the final evaluation (rl is done: skipped)
    except GateFailed as e:
        say(f"[{cfg.rl.algorithm}] not run: {e}")
        return {"status": f"not run: {e}", "output_dir": str(run_dir)}
    write_pipeline_report(cfg, manifest)
    final, rl = manifest.stage("final_eval")["metrics"], manifest.stage("rl")["metrics"]
    return {
        "status": "done",
        "gold": final.get("gold_rl"),
        "proxy": final["proxy_rl"],
        "kl": final["kl_rl"],
        "kl_sem": final.get("kl_sem_rl"),
        "wall_s": record.get("wall_s"),
        "peak_mb": record.get("peak_mb"),
        "memory": record.get("memory"),
        "output_dir": str(run_dir),
        "model_dir": manifest.stage("rl")["outputs"]["model_dir"],
        "gold_sft": final.get("gold_sft"),
        "gold_gain": final.get("gold_gain"),  # paired over the same prompts: gold_rl - gold_sft per prompt
        "gold_gain_sem": final.get("gold_gain_sem"),
        "proxy_sft": final["proxy_sft"],
        "length": final.get("length_rl"),
        "train_kl": rl.get("final_kl"),
        "alerts": rl.get("alerts"),
        "skipped": rl.get("skipped", []),
        # its win rate over the SFT policy by each judge (gold, rm, judge), paired over the same prompts
        **{k: v for k, v in final.items() if k.startswith(("win_rate_", "lc_win_rate_"))},
    }


def curve(cfg: PipelineConfig, base: Manifest, ns: Sequence[int], say: Callable[[str], None]) -> dict[str, Any]:
    """The SFT policy's best-of-N curve on the held-out prompts (loaded when computed before with the same inputs)."""
    temperature, max_new = eval_sampling(cfg)
    prompts = rl_prompts(StageContext(cfg=cfg, manifest=base, outputs={}, say=say))[1]
    key = config_hash(
        {
            "sft": base.stage("sft").get("config_hash"),
            "reward": base.stage("reward").get("config_hash"),
            "ns": list(ns),
            "temperature": temperature,
            "max_new_tokens": max_new,
            "prompts": prompts,
            "seed": cfg.seed,
        }
    )
    path = cfg.output_dir / CURVE_FILE
    stored = _read(path)
    if stored and stored.get("key") == key:
        say("[best-of-N curve] done earlier, skipping")
        return stored
    say(f"[best-of-N curve] sampling {max(ns)} responses for each of {len(prompts)} held-out prompts")
    policy, tokenizer = load_for_sampling(base.stage("sft")["outputs"]["model_dir"], cfg.model.preset)
    rm, rm_tokenizer = load_scorer(base.stage("reward")["outputs"]["model_dir"], cfg.model.preset)
    result = best_of_n_curve(
        policy,
        tokenizer,
        rm,
        rm_tokenizer,
        prompts,
        ns=ns,
        max_new_tokens=max_new,
        temperature=temperature,
        seed=cfg.seed,
        metric_fn=lab.lab_gold if cfg.data.prompts == LAB else None,
    )
    out = {"key": key, "n_prompts": len(prompts), **result.to_dict()}
    write_json(path, out)
    return out


def run_compare(
    cfg: PipelineConfig,
    algorithms: Sequence[str],
    *,
    ns: Sequence[int] = DEFAULT_NS,
    say: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Run (or resume) the comparison and write ``compare.json`` / ``compare.md`` / ``compare.png``.

    Returns the ``compare.json`` dict: ``{"sft": {"gold", "proxy"}, "algorithms": {name: {"gold", "proxy", "kl",
    "wall_s", "peak_mb", "output_dir", "win_rate_gold", "win_rate_gold_low", ..., "win_rate_rm", ...}}, "best_of_n":
    {"rows": [...], "gold_stops": {...}}, "settings": {...}}`` (``gold`` is None and there is no ``win_rate_gold``
    outside the lab; the win-rate keys are the final evaluation's, :func:`rlhfkit.rl.winrate.win_rate_metrics`).
    """
    configs = algorithm_configs(cfg, algorithms)
    temperature, max_new = eval_sampling(cfg)
    start = time.perf_counter()
    redo_changed(cfg, SHARED_STAGES, say)
    base = run_pipeline(cfg, until="rm_eval", say=say)
    rows = {}
    for name, algo_cfg in configs.items():
        say(f"== {name} -> {algo_cfg.output_dir}")
        rows[name] = run_algorithm(algo_cfg, base, say)
    best_of_n = curve(cfg, base, ns, say)
    done = [r for r in rows.values() if r["status"] == "done"]
    sft = {"gold": done[0]["gold_sft"], "proxy": done[0]["proxy_sft"]} if done else {"gold": None, "proxy": None}
    sft["model_dir"] = base.stage("sft")["outputs"]["model_dir"]
    result = {
        "sft": sft,
        "algorithms": rows,
        "best_of_n": {k: v for k, v in best_of_n.items() if k != "key"},
        "settings": {
            "output_dir": str(cfg.output_dir),
            "eval_prompts": best_of_n["n_prompts"],
            "temperature": temperature,
            "max_new_tokens": max_new,
            "seed": cfg.seed,
            "reward_model": base.stage("reward")["outputs"]["model_dir"],
            "rm_accuracy": base.stage("rm_eval")["metrics"].get("accuracy"),
        },
        "wall_s_this_call": time.perf_counter() - start,
    }
    write_json(cfg.output_dir / "compare.json", result)
    _plot(cfg.output_dir / "compare.png", result)
    write_text(cfg.output_dir / "compare.md", markdown(result))
    return result


def _read(path: Path) -> dict | None:
    import json

    return json.loads(path.read_text()) if path.exists() else None


def _num(x: Any, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def markdown(result: dict[str, Any]) -> str:
    """``compare.md``: the table, the best-of-N curve and where gold stops following the proxy."""
    s = result["settings"]
    lines = [
        f"# rlhfkit compare: `{s['output_dir']}`",
        "",
        f"One SFT model, one reward model (held-out accuracy {_num(s['rm_accuracy'])}), one set of preference pairs "
        f"and prompts. Every policy sampled once on the same {s['eval_prompts']} held-out prompts at temperature "
        f"{s['temperature']:g}, at most {s['max_new_tokens']} tokens (seed {s['seed']}); KL to the SFT policy in "
        "nats per sequence on those samples; wall time and peak memory of the algorithm's training.",
        "",
        "Gold gain: the mean per-prompt gold difference from the SFT policy ± its standard error.",
        "",
        "| policy | gold reward | gold gain | reward-model score | KL to SFT (nats/seq) | wall time (s) "
        "| peak memory (MB) | output |",
        "|---|---|---|---|---|---|---|---|",
        f"| SFT | {_num(result['sft']['gold'])} | — | {_num(result['sft']['proxy'])} | 0 | — | — | "
        f"`{result['sft']['model_dir']}` |",
    ]
    for name, r in result["algorithms"].items():
        if r["status"] != "done":
            lines.append(f"| {name} | {r['status']} | | | | | | `{r['output_dir']}` |")
            continue
        kl = f"{r['kl']:.2f} ± {r['kl_sem']:.2f}" if r.get("kl_sem") is not None else _num(r["kl"], 2)
        gain = f"{r['gold_gain']:+.3f} ± {r['gold_gain_sem']:.3f}" if r.get("gold_gain_sem") is not None else "—"
        lines.append(
            f"| {name} | {_num(r['gold'])} | {gain} | {_num(r['proxy'])} | {kl} | {_num(r['wall_s'], 0)} | "
            f"{_num(r['peak_mb'], 0)} | `{r['output_dir']}` |"
        )
    lines += _win_rate_table(result["algorithms"])
    bon = result["best_of_n"]
    gold = any("gold" in row for row in bon["rows"])
    lines += [
        "",
        f"## Best-of-N from the SFT policy (decoding baseline, {bon['n_prompts']} prompts)",
        "",
        "Expected best of N samples by the reward model (unbiased estimate from the largest N's samples); "
        "KL is the analytic log N - (N-1)/N nats (an upper bound on the true KL).",
        "",
        "| N | KL (nats/seq) | reward-model score" + (" | gold reward |" if gold else " |"),
        "|---|---|---|" + ("---|" if gold else ""),
    ]
    for row in bon["rows"]:
        tail = f" {row['gold']:.3f} ± {row['gold_sem']:.3f} |" if gold else ""
        lines.append(f"| {row['n']} | {row['kl']:.3f} | {row['proxy']:.3f} ± {row['proxy_sem']:.3f} |{tail}")
    stops = bon.get("gold_stops") or {}
    if stops:
        lines += ["", _gold_stops_sentence(stops)]
    skipped = {n: r.get("skipped") for n, r in result["algorithms"].items() if r.get("skipped")}
    if skipped:
        lines += ["", "## What each algorithm does not use", ""]
        lines += [f"- **{n}**: " + "; ".join(items) for n, items in skipped.items()]
    lines += ["", "![gold and reward-model score vs KL](compare.png)", ""]
    return "\n".join(lines)


JUDGES = (("gold", "gold"), ("judge", "judge"), ("rm", "reward model"))  # who judges a win, in the table's order


def _win_rate_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """compare.md's win rates over the SFT policy: a column per judge that judged, raw and length-controlled."""
    judges = [(key, name) for key, name in JUDGES if any(f"win_rate_{key}" in r for r in rows.values())]
    if not judges:
        return []
    head = " | ".join(f"by {name} | LC, by {name}" for _, name in judges)
    lines = [
        "",
        "## Win rate over the SFT policy",
        "",
        "Per held-out prompt, the policy's answer against the SFT policy's: a win 1, a tie (or the same answer) 1/2, "
        "a loss 0; the mean with its 95% interval (Wilson's score interval, ties counted as less variable than a "
        "coin flip). LC: length-controlled (AlpacaEval 2): a logistic model of the outcome on the standardised "
        "length difference in characters, read at zero difference; — where it cannot be fitted.",
        "",
        f"| policy | {head} |",
        "|---|" + "---|---|" * len(judges),
    ]
    for name, r in rows.items():
        if r["status"] == "done":
            cells = [rate_text(r, f"{pre}win_rate_{key}") or "—" for key, _ in judges for pre in ("", "lc_")]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _gold_stops_sentence(stops: dict[str, Any]) -> str:
    proxy = "rises monotonically in N" if stops["proxy_monotone"] else "is not monotone in N"
    if stops["stops_at"] is not None:
        return (
            f"The reward-model score {proxy}; gold peaks at N = {stops['gold_peak_n']} ({stops['gold_peak']:.3f}) "
            f"and is {stops['drop_at_largest_n']:.3f} ± {stops['drop_sem']:.3f} lower at the largest N: gold "
            f"stops following the proxy after N = {stops['stops_at']}."
        )
    return (
        f"The reward-model score {proxy}; gold is highest at N = {stops['gold_peak_n']} "
        f"({stops['gold_peak']:.3f}) and does not fall significantly after it (drop at the largest N "
        f"{stops['drop_at_largest_n']:.3f} ± {stops['drop_sem']:.3f}): gold follows the proxy over the N "
        "measured."
    )


def _plot(path: Path, result: dict[str, Any]) -> None:
    """Gold and reward-model score against KL to the SFT policy: a point per algorithm, the best-of-N curve."""
    plt = pyplot()
    bon = result["best_of_n"]["rows"]
    panels = [("gold", "gold reward")] if result["sft"]["gold"] is not None else []
    panels.append(("proxy", "reward-model score"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        ax.plot([r["kl"] for r in bon], [r[key] for r in bon], "-o", color="gray", ms=3, label="best-of-N (SFT)")
        for r in bon:
            ax.annotate(f"N={r['n']}", (r["kl"], r[key]), textcoords="offset points", xytext=(3, -9), fontsize=7)
        ax.plot([0.0], [result["sft"][key]], "k*", ms=10, label="SFT")
        for i, (name, r) in enumerate(result["algorithms"].items()):
            if r["status"] == "done":
                ax.errorbar([r["kl"]], [r[key]], xerr=[r.get("kl_sem") or 0.0], fmt="o", color=f"C{i}", label=name)
        ax.set(xlabel="KL to the SFT policy (nats / sequence)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle("same SFT model, reward model, pairs and prompts")
    fig.tight_layout()
    save_figure(fig, path)
