"""One prepared check of rlhfkit on a GPU: the memory planner against measured peaks, seconds per step, PPO's
rollout against its update, and the GPU-only paths. Sized for about 8 minutes on one H100 (no run starts after
``--budget`` seconds); writes DIR/gpu_check.json and DIR/gpu_check.md, rewritten after each measurement, so a run cut
short still reports what it measured.

    bash scripts/gpu_setup_device.sh && PYTHONPATH=/tmp/site:$PWD python3 bench/gpu_check.py --out $OUT/gpu
    python bench/gpu_check.py --tiny --out /tmp/gpu-tiny     # CPU, tiny shapes, about a minute (tested in CI)

docs/gpu.md has the device call and how to read the result.

What it runs. Two real architectures, Qwen2.5-1.5B and Llama-3.2-3B, built from the planner's dimension table
(``rlhfkit.planner.dims.KNOWN_MODELS``) with random weights and the lab's tokenizer (no hub). For each, every trainer
the planner covers -- sft, reward, ppo (shared and separate layouts), grpo, dpo -- runs through rlhfkit's own run
function (``rlhfkit.train``) for a few optimiser steps with the batch sizes, lengths, preset and GPU-size preset of
``configs/<model>/<trainer>.yaml``, on data of the planner's worst case: every sequence as long as the config
allows (prompts of the planner's 256 tokens; random weights rarely sample EOS, so responses run to their cap). Then,
on the first model and as the time budget allows, sft and ppo (shared) with the qlora preset. Per run:

* peak memory (``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` from loading to the end of training,
  not the final save) against ``rlhfkit.planner.plan`` of the same settings: allocated / the formulas (the plan
  without its overhead term) and reserved / the whole plan;
* seconds per optimiser step (PPO: per update), the first step (warm-up) left out;
* PPO: tokens generated per second against the seconds of the PPO epochs (``time/generation``, ``time/rollout``,
  ``time/ppo_epochs``, logged by the trainer).

The GPU-only paths: bf16 selected on the GPU (``rlhfkit.core.hardware``); the trained reward model's scores in bf16
equal to fp32 within tolerance; the ``gpu``-marked tests (``tests/gpu/``) passing. Each run is isolated: an
out-of-memory error or any other failure is recorded with its traceback's tail, memory is freed, the check goes on.

``--tiny`` runs the same on the CPU with tiny shapes: step times and plans are real, memory is not measured there.
Deliberately left out: rloo (it holds what grpo holds) and best_of_n, full fine-tuning (the shipped configs use
LoRA), several GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.metadata
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights and the lab tokenizer: nothing to fetch
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig

from rlhfkit.core.arguments import read_yaml, trainer_config
from rlhfkit.core.hardware import Hardware, compute_dtype, detect_hardware, precision_kwargs
from rlhfkit.core.io import write_json, write_text
from rlhfkit.lab import build_tiny_model
from rlhfkit.models.loading import load_reward_model
from rlhfkit.models.scoring import score_texts
from rlhfkit.planner.dims import ModelDims, model_dims
from rlhfkit.planner.fit import plan_kwargs
from rlhfkit.planner.memory import GIB
from rlhfkit.planner.plans import DEFAULT_PROMPT_LENGTH, SAMPLING_TRAINERS, plan
from rlhfkit.reward.config import RewardConfig
from rlhfkit.rl.algorithms import ALGORITHMS
from rlhfkit.train import run_dpo, run_grpo, run_ppo, run_reward, run_sft

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # the planner table's name -> the folder of its shipped configs
    "Qwen/Qwen2.5-1.5B-Instruct": "configs/qwen2.5-1.5b-instruct",
    "meta-llama/Llama-3.2-3B-Instruct": "configs/llama-3.2-3b-instruct",
}
RUNS = (("sft", None), ("reward", None), ("ppo", "shared"), ("ppo", "separate"), ("grpo", None), ("dpo", None))
QLORA_RUNS = (("sft", None), ("ppo", "shared"))  # first model only, after the rest
STEPS = {"sft": 3, "reward": 3, "ppo": 2, "grpo": 2, "dpo": 3}  # optimiser steps (PPO: updates); the first warms up
TOLERANCE = 0.10  # the planner's goal: measured within 10% of planned
# bf16 reward scores against fp32: max |bf16 - fp32| within 20% of the fp32 scores' spread, correlation >= 0.99. A
# broken bf16 path (overflow, a wrong cast) fails both; bf16's rounding passes: on the CPU, a random model of
# Qwen2.5-0.5B's shape (24 layers) gave 8% of the spread and correlation 0.9996, the lab's nano model 3% and 0.99993.
SCORE_TOLERANCE, SCORE_CORRELATION = 0.2, 0.99
BUDGET_S = 420  # no run starts after this many seconds, so the check ends near 8 minutes
GPU_TESTS_TIMEOUT_S = 300
# --tiny: shapes and lengths that train in a second on a CPU (the config's other values are kept)
TINY_DIMS = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=128)
TINY_VALUES = {
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2,
    "max_length": 64,
    "response_length": 16,
    "max_completion_length": 16,
    "local_rollout_forward_batch_size": 4,
    "num_generations": 2,
    "kl_samples": 4,
    "kl_max_new_tokens": 8,
}
TINY_PROMPT_TOKENS = 16
WORDS = (" apple", " pear", " plum", " grape", " lemon")  # one token each in the lab tokenizer (checked)


# ------------------------------------------------------------------------------------------ models and data
def dims_of(name: str, tiny: bool) -> ModelDims:
    dims = model_dims(name)
    if not tiny:
        return dims
    return dataclasses.replace(dims, name=f"{name} (tiny)", **TINY_DIMS, vocab_size=512, n_params=0)


def build_model(dims: ModelDims, folder: Path, work: Path) -> int:
    """Save a random-weight causal LM of ``dims`` with the lab's tokenizer into ``folder``; returns its parameter
    count (the planner's ``n_params`` must equal it)."""
    lab = work / "lab-tokenizer"
    if not lab.exists():
        build_tiny_model(lab, "nano")
    tok = AutoTokenizer.from_pretrained(lab)
    tok.model_max_length = dims.max_position_embeddings  # the lab's is its nano model's 128
    config = AutoConfig.for_model(
        dims.model_type,
        hidden_size=dims.hidden_size,
        num_hidden_layers=dims.num_layers,
        num_attention_heads=dims.num_heads,
        num_key_value_heads=dims.num_kv_heads,
        head_dim=dims.head_dim,
        intermediate_size=dims.intermediate_size,
        vocab_size=dims.vocab_size,
        tie_word_embeddings=dims.tie_word_embeddings,
        max_position_embeddings=dims.max_position_embeddings,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(detect_hardware().device):  # initialised where it runs: seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype())
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n = sum(p.numel() for p in model.parameters())
    del model
    free_memory()
    return n


def check_words(folder: Path) -> None:
    tok = AutoTokenizer.from_pretrained(folder)
    for word in WORDS:
        n = len(tok(word * 8, add_special_tokens=False).input_ids)
        if n != 8:
            raise RuntimeError(f"{word!r} x 8 is {n} tokens in the lab tokenizer, not 8; pick one-token words")


def text(n: int, i: int = 0) -> str:
    """``n`` tokens of the lab tokenizer (word ``i``, repeated)."""
    return WORDS[i % len(WORDS)] * n


def run_data(trainer: str, values: dict[str, Any], prompt_tokens: int, rows: int = 64) -> list[dict]:
    """Rows as long as the config allows: SFT rows and DPO pairs are cut to ``max_length``, reward pairs (which TRL
    drops when longer) are exactly ``max_length`` with their EOS, prompts have ``prompt_tokens``."""
    if trainer in ("ppo", "grpo"):
        return [{"prompt": text(prompt_tokens, i)} for i in range(rows)]
    length = values["max_length"]
    prompt = min(prompt_tokens, length // 4)
    if trainer == "sft":
        return [{"prompt": text(prompt, i), "completion": text(length - prompt, i + 1)} for i in range(rows)]
    side = length - prompt - (1 if trainer == "reward" else 0)  # + EOS
    return [
        {"prompt": text(prompt, i), "chosen": text(side, i + 1), "rejected": text(side, i + 2)} for i in range(rows)
    ]


# ------------------------------------------------------------------------------------------ configs and plans
def config_class(trainer: str):
    return {"sft": SFTConfig, "reward": RewardConfig}.get(trainer) or ALGORITHMS[trainer].config_class()


def run_values(trainer: str, raw: dict[str, Any], tiny: bool) -> dict[str, Any]:
    """The config file's fields of ``trainer``'s config class, shrunk with ``--tiny``, for a few steps, no saves."""
    fields = config_class(trainer).__dataclass_fields__
    values = {k: v for k, v in raw.items() if k in fields and k != "output_dir"}
    if tiny:
        values.update({k: v for k, v in TINY_VALUES.items() if k in fields})
    steps = STEPS[trainer]
    if trainer == "ppo":
        values["total_episodes"] = (
            steps * values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
        )
        values["num_sample_generations"] = 0
    else:
        values["max_steps"] = steps
    # PPO logs its times every update; DPO samples its KL at each log: once, at the last step
    values["logging_steps"] = steps if trainer == "dpo" else 1
    values.update(save_strategy="no", report_to="none")
    return values


def planned(dims: ModelDims, trainer: str, layout, preset: str, gpu: float, values: dict, prompt_tokens: int):
    kwargs = plan_kwargs(trainer, values)
    if trainer in SAMPLING_TRAINERS:
        kwargs["prompt_length"] = prompt_tokens
    if trainer == "ppo":
        kwargs["layout"] = layout
    precision = "bf16" if precision_kwargs()["bf16"] else "fp32"
    return plan(dims, trainer, preset, gpu, precision=precision, suggest=False, **kwargs)


# ------------------------------------------------------------------------------------------ measuring
def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory() -> dict[str, int]:
    """The CUDA caching allocator's peaks since the last reset, in bytes."""
    return {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved()}


class Meter(TrainerCallback):
    """Times each optimiser step and reads the peak memory when training ends (before the final save)."""

    def __init__(self):
        self.cuda = torch.cuda.is_available()
        self.marks: list[float] = []
        self.peak: dict[str, int] | None = None

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks = [self._now()]

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(self._now())

    def on_train_end(self, args, state, control, **kwargs):
        if self.cuda:
            self.peak = peak_memory()

    @property
    def step_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def train(trainer: str, layout, preset: str, model_dir: Path, reward_dir: Path | None, data, config, meter):
    """One run through rlhfkit's own run function."""
    kw = {"preset": preset, "callbacks": [meter]}
    if trainer == "sft":
        return run_sft(model_dir, data, config, **kw)
    if trainer == "reward":
        return run_reward(model_dir, data, config, **kw)
    if trainer == "ppo":
        return run_ppo(model_dir, data, config, reward_model=reward_dir, layout=layout, **kw)
    if trainer == "grpo":
        return run_grpo(model_dir, data, config, reward_model=reward_dir, **kw)
    return run_dpo(model_dir, data, config, **kw)


def ppo_times(log_history: list[dict], prompts_per_update: int) -> dict[str, float]:
    """Generation throughput against the PPO epochs, from the updates after the first (the only one if alone)."""
    logs = [h for h in log_history if "time/generation" in h]
    logs = logs[1:] or logs
    mean = lambda key: statistics.fmean(h[key] for h in logs)  # noqa: E731
    tokens = mean("completions/mean_length") * prompts_per_update
    return {
        "generated_tokens_per_update": round(tokens, 1),
        "generation_s": round(mean("time/generation"), 3),
        "generation_tokens_per_s": round(tokens / mean("time/generation"), 1),
        "rollout_s": round(mean("time/rollout"), 3),
        "ppo_epochs_s": round(mean("time/ppo_epochs"), 3),
    }


def measure(case: dict, model_dir: Path, reward_dir: Path | None, out: Path, tiny: bool, dims: ModelDims) -> dict:
    """Plan and run one case; every failure is caught and recorded, and memory freed, so the next case runs."""
    trainer, layout, preset = case["trainer"], case["layout"], case["preset"]
    raw = read_yaml(REPO / case["config"])
    gpu = raw["gpu"]  # GB: a GPU-size preset
    values = run_values(trainer, raw, tiny)
    prompt_tokens = TINY_PROMPT_TOKENS if tiny else DEFAULT_PROMPT_LENGTH
    p = planned(dims, trainer, layout, preset, gpu, values, prompt_tokens)
    subtotal = p.total_bytes - p.breakdown["overhead"]
    record = {**case, "gpu_preset_gb": gpu, "steps": STEPS[trainer], "values": values}
    record["plan"] = {"total": p.total_bytes, "formulas": subtotal, "breakdown": p.breakdown, "settings": p.settings}
    free_memory()
    cuda = torch.cuda.is_available()
    if cuda:  # what an earlier run left behind is not this run's (it should be nothing)
        torch.cuda.reset_peak_memory_stats()
        before = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}
    meter, started = Meter(), time.perf_counter()
    try:
        config = trainer_config(config_class(trainer), trainer, out, values, preset=preset, gpu=gpu)
        data = run_data(trainer, values, prompt_tokens)
        result = train(trainer, layout, preset, model_dir, reward_dir, data, config, meter)
        record["status"] = "ok"
    except torch.cuda.OutOfMemoryError as e:
        result, record["status"], record["error"] = None, "out of memory", str(e).splitlines()[0]
    except Exception as e:  # any failure of one run is recorded; the check goes on with the next
        result, record["status"] = None, "error"
        record["error"] = error_line(e)
        record["traceback"] = traceback.format_exc().splitlines()[-12:]
    record["wall_s"] = round(time.perf_counter() - started, 1)
    steps = meter.step_seconds
    record["step_seconds"] = [round(s, 3) for s in steps]
    record["seconds_per_step"] = round(statistics.median(steps[1:] or steps), 3) if steps else None
    if cuda:
        peak = meter.peak or peak_memory()  # a run that failed before the end of training: the peak until then
        peak = {k: v - before[k] for k, v in peak.items()}
        record["memory"] = {"measured": True, **peak, "before": before}
        if record["status"] == "ok":
            record["allocated_vs_formulas"] = round(peak["allocated"] / subtotal, 3)
            record["reserved_vs_plan"] = round(peak["reserved"] / p.total_bytes, 3)
            record["within_tolerance"] = abs(record["reserved_vs_plan"] - 1) <= TOLERANCE
    else:
        record["memory"] = {"measured": False, "why": "not measured on the CPU"}
    if trainer == "ppo" and result is not None:
        prompts = values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
        record["ppo"] = ppo_times(result.log_history, prompts)
    del result
    free_memory()
    return record


# ------------------------------------------------------------------------------------------ the GPU-only paths
def precision_check() -> dict:
    """bf16 where the GPU supports it, never on the CPU (``rlhfkit.core.hardware``)."""
    hw = detect_hardware()
    kwargs = precision_kwargs(hw)
    dtype = str(compute_dtype(hw)).removeprefix("torch.")
    expected = hw.device == "cuda" and torch.cuda.is_bf16_supported()
    ok = kwargs["bf16"] == expected and (dtype == "bfloat16") == expected
    return {
        "device": hw.device,
        "bf16_supported": hw.bf16,
        "precision_kwargs": kwargs,
        "compute_dtype": dtype,
        "ok": ok,
    }


def reward_precision(reward_model: Path, tiny: bool) -> dict:
    """The trained reward model's scores of the same texts loaded in bf16 and in fp32, on this machine's device."""
    device = detect_hardware().device
    step = 4 if tiny else 32
    texts = [text(step * (i + 1), i) + text(step // 2, i + 2) for i in range(16)]  # 16 lengths, mixed words
    scores = {}
    for name, bf16 in (("bf16", True), ("fp32", False)):
        model, tok = load_reward_model(reward_model, "full", hardware=Hardware(device, bf16=bf16, fp16=False))
        scores[name] = score_texts(model, tok, texts, device=device)
        del model
        free_memory()
    diff = float(np.abs(scores["bf16"] - scores["fp32"]).max())
    spread = float(scores["fp32"].std())
    correlation = float(np.corrcoef(scores["bf16"], scores["fp32"])[0, 1])
    return {
        "device": device,
        "texts": len(texts),
        "max_abs_diff": diff,
        "fp32_std": spread,
        "diff_vs_spread": diff / spread if spread > 0 else None,
        "correlation": correlation,
        "tolerance": {"diff_vs_spread": SCORE_TOLERANCE, "correlation": SCORE_CORRELATION},
        "ok": spread > 0 and diff <= SCORE_TOLERANCE * spread and correlation >= SCORE_CORRELATION,
    }


def gpu_tests(work: Path) -> dict:
    """``pytest -m gpu tests/gpu`` in a fresh interpreter: each test's outcome (on a CPU all are skipped)."""
    xml = work / "gpu-tests.xml"
    cmd = [sys.executable, "-m", "pytest", *"-q -m gpu tests/gpu -p no:cacheprovider".split(), f"--junitxml={xml}"]
    outcome: dict[str, list] = {"passed": [], "failed": [], "skipped": []}
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=GPU_TESTS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"exit_code": None, **outcome, "error": f"timed out after {GPU_TESTS_TIMEOUT_S} s"}
    for case in ET.parse(xml).iter("testcase") if xml.exists() else ():
        name = case.get("name")
        bad = [c for c in case if c.tag in ("failure", "error")]
        skip = [c for c in case if c.tag == "skipped"]
        if bad:
            outcome["failed"].append({"test": name, "message": (bad[0].get("message") or "").splitlines()[:1]})
        elif skip:
            outcome["skipped"].append({"test": name, "reason": skip[0].get("message")})
        else:
            outcome["passed"].append(name)
    result = {"exit_code": proc.returncode, **outcome, "wall_s": round(time.perf_counter() - started, 1)}
    if proc.returncode not in (0, 5):  # 5: none collected
        result["output_tail"] = (proc.stdout + proc.stderr).splitlines()[-20:]
    return result


# ------------------------------------------------------------------------------------------ report
def device_info() -> dict:
    if not torch.cuda.is_available():
        return {"name": "cpu", "threads": torch.get_num_threads()}
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / GIB, 1),
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "torch": torch.__version__}
    for name in ("transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def gib(n: int | None) -> str:
    return "" if n is None else f"{n / GIB:.3g}"


def run_rows(runs: list[dict]) -> list[str]:
    lines = [
        "| model | trainer | preset | status | planned GiB | formulas GiB | allocated GiB | reserved GiB "
        "| allocated / formulas | reserved / plan | s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        trainer = r["trainer"] + (f" ({r['layout']})" if r["layout"] else "")
        mem, plan_ = r.get("memory", {}), r.get("plan", {})
        unmeasured = "n/a (CPU)" if mem else ""  # skipped runs have no memory record
        ratio = r.get("reserved_vs_plan")
        flag = "" if ratio is None else (" ✓" if r["within_tolerance"] else " ✗")
        cells = [
            r["model"].split("/")[-1],
            trainer,
            r["preset"],
            r["status"],
            gib(plan_.get("total")),
            gib(plan_.get("formulas")),
            gib(mem.get("allocated")) if mem.get("measured") else unmeasured,
            gib(mem.get("reserved")) if mem.get("measured") else unmeasured,
            str(r.get("allocated_vs_formulas", "")),
            f"{ratio}{flag}" if ratio is not None else "",
            str(r.get("seconds_per_step") or ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict) -> str:
    dev, pk = report["device"], report["packages"]
    lines = [
        f"# GPU check: {dev['name']}",
        "",
        f"{report['mode']} run of `bench/gpu_check.py`, {report['started']}, {report.get('wall_s', '?')} s. "
        + ", ".join(f"{k} {v}" for k, v in pk.items()),
        "",
        "## GPU paths",
        "",
    ]
    hw = report["hardware"]
    lines.append(
        f"- precision on {hw['device']}: bf16 supported {hw['bf16_supported']}, `precision_kwargs` bf16="
        f"{hw['precision_kwargs']['bf16']}, compute dtype {hw['compute_dtype']}: {'ok' if hw['ok'] else 'WRONG'}"
    )
    rp = report.get("reward_bf16_vs_fp32")
    if rp and "error" not in rp:
        lines.append(
            f"- reward model in bf16 vs fp32 on {rp['device']}, {rp['texts']} texts: max |diff| "
            f"{rp['max_abs_diff']:.4g} = {rp['diff_vs_spread'] or float('nan'):.3f} of the fp32 scores' spread "
            f"{rp['fp32_std']:.4g} (at most {SCORE_TOLERANCE}), correlation {rp['correlation']:.5f} (at least "
            f"{SCORE_CORRELATION}): " + ("ok" if rp["ok"] else "OUT OF TOLERANCE")
        )
    elif rp:
        lines.append(f"- reward model in bf16 vs fp32: {rp['error']}")
    gt = report.get("gpu_tests")
    if gt:
        reasons = sorted({s["reason"] for s in gt["skipped"]})
        lines.append(
            f"- `pytest -m gpu tests/gpu`: {len(gt['passed'])} passed, {len(gt['failed'])} failed, "
            f"{len(gt['skipped'])} skipped" + (f" ({'; '.join(reasons)})" if reasons else "")
        )
        lines += [f"  - failed: {f['test']}: {' '.join(f['message'])}" for f in gt["failed"]]
        lines += [f"  - {gt['error']}"] if gt.get("error") else []
    lines += ["", "## Memory and seconds per step", ""]
    lines += [
        f"Planned by `rlhfkit.planner.plan` with each run's settings; goal: reserved / plan within "
        f"{report['tolerance']:.0%} of 1 (✓). Formulas: the plan without its overhead term.",
        "",
        *run_rows(report["runs"]),
    ]
    ppo = [r for r in report["runs"] if "ppo" in r]
    if ppo:
        lines += ["", "## PPO: rollout against update", ""]
        lines += [
            "| model | layout | preset | tokens / update | generation s | tokens / s | rollout s | PPO epochs s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in ppo:
            t = r["ppo"]
            cells = [r["model"].split("/")[-1], r["layout"], r["preset"], *map(str, t.values())]
            lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in report["runs"] if r["status"] != "ok" and not r["status"].startswith("skipped")]
    skipped = [r for r in report["runs"] if r["status"].startswith("skipped")]
    if failed or skipped:
        lines += ["", "## Not measured", ""]
        for r in failed + skipped:
            what = f"{r['model'].split('/')[-1]} {r['trainer']} {r['layout'] or ''} {r['preset']}".replace("  ", " ")
            lines.append(f"- {what}: {r['status']}" + (f": {r['error']}" if r.get("error") else ""))
    return "\n".join(lines) + "\n"


def save(out: Path, report: dict) -> None:
    write_json(out / "gpu_check.json", report)
    write_text(out / "gpu_check.md", markdown(report))


def progress_line(r: dict) -> str:
    what = f"{r['model'].split('/')[-1]} {r['trainer']}" + (f" {r['layout']}" if r["layout"] else "")
    line = f"{what} {r['preset']}: {r['status']}"
    if r["status"] == "ok":
        line += f", {r['wall_s']} s, {r['seconds_per_step']} s/step, planned {gib(r['plan']['total'])} GiB"
        if r["memory"]["measured"]:
            line += f", reserved {gib(r['memory']['reserved'])} GiB ({r['reserved_vs_plan']} of plan)"
    return line + (f": {r['error']}" if r.get("error") else "")


# ------------------------------------------------------------------------------------------ main
def cases(has_bitsandbytes: bool) -> list[dict]:
    """Every run in order: each model's runs with its configs' preset, then the first model's QLoRA runs."""
    out = []
    for name, folder in MODELS.items():
        for trainer, layout in RUNS:
            config = f"{folder}/{trainer}.yaml"
            preset = read_yaml(REPO / config)["preset"]
            out.append({"model": name, "trainer": trainer, "layout": layout, "preset": preset, "config": config})
    name, folder = next(iter(MODELS.items()))
    skip = None if has_bitsandbytes else "skipped: bitsandbytes is not installed, so QLoRA stays unmeasured"
    for trainer, layout in QLORA_RUNS:
        config = f"{folder}/{trainer}.yaml"
        out.append({"model": name, "trainer": trainer, "layout": layout, "preset": "qlora", "config": config})
        out[-1]["skip"] = skip
    return out


def error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"


def build(report: dict, name: str, work: Path, tiny: bool, models: dict[str, Path]) -> str | None:
    """Build model ``name`` into ``models``; returns why its runs are skipped when that fails."""
    dims = dims_of(name, tiny)
    folder = work / f"model-{len(models)}"
    try:
        n = build_model(dims, folder, work)
        check_words(folder)
    except Exception as e:  # recorded; this model's runs are skipped, the other model's still run
        report["models"][name] = {"error": error_line(e), "traceback": traceback.format_exc().splitlines()[-12:]}
        return f"skipped: building the model failed ({error_line(e)})"
    models[name] = folder
    report["models"][name] = {"n_params": n, "planned_n_params": dims.n_params, "dims": dataclasses.asdict(dims)}
    return None


def run_all(report: dict, work: Path, out: Path, tiny: bool, start: float, budget: float) -> None:
    """Each case in turn (each model built when first needed); the report is saved after each."""
    models: dict[str, Path] = {}
    rewards: dict[str, Path] = {}  # model -> its reward run's model, which PPO and GRPO score with
    for i, case in enumerate(cases(report["packages"]["bitsandbytes"] is not None)):
        skip = case.pop("skip", None)
        name, trainer = case["model"], case["trainer"]
        if skip is None and time.perf_counter() - start > budget:
            skip = f"skipped: the time budget ({budget:g} s) was spent"
        if skip is None and trainer in ("ppo", "grpo") and name not in rewards:
            skip = "skipped: it scores with the reward run's model, and that run did not finish"
        if skip is None and name not in models:
            skip = build(report, name, work, tiny, models)
        if skip:
            record = {**case, "status": skip}
        else:
            run_dir = work / f"run-{i}"
            record = measure(case, models[name], rewards.get(name), run_dir, tiny, dims_of(name, tiny))
            if trainer == "reward" and record["status"] == "ok":
                rewards[name] = run_dir / "model"
                if "reward_bf16_vs_fp32" not in report:
                    try:
                        report["reward_bf16_vs_fp32"] = reward_precision(rewards[name], tiny)
                    except Exception as e:  # recorded like a failed run
                        report["reward_bf16_vs_fp32"] = {"error": error_line(e)}
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
        report["runs"].append(record)
        save(out, report)
        print(progress_line(record), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (memory not measured)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds after which no run starts ({BUDGET_S})")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "tiny" if args.tiny else "full",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(),
        "packages": versions(),
        "tolerance": TOLERANCE,
        "budget_s": args.budget,
        "hardware": precision_check(),
        "models": {},
        "runs": [],
    }
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        report["gpu_tests"] = gpu_tests(work)
        save(out, report)
        run_all(report, work, out, args.tiny, start, args.budget)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        report["wall_s"] = round(time.perf_counter() - start, 1)
        save(out, report)
    print(f"{out / 'gpu_check.md'}: {report['wall_s']} s")


if __name__ == "__main__":
    main()
