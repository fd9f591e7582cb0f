"""Every bad input stopped at the door: a corpus of broken inputs across every command, recipe, config section and
data format. Each one must exit with code 2, print exactly one ``error:`` line on stderr that names the field / row /
file and says what to do, print no traceback, and leave the workspace (output folders included) exactly as it was.
Each case is filed under what such an input does when nothing checks it: it raises a traceback, is accepted
silently, is found too late (after earlier stages trained), fails with no fix in the message, prints argparse's
multi-line usage, or trains against a reward model without a trained score head; plus files rlhfkit must never lose.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import runpy
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from rlhfkit.cli import main as rlhfkit_main
from rlhfkit.core.entry import run_guarded
from rlhfkit.pipeline.validate import run_recipe

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())

TRACEBACK, SILENT, TOO_LATE, NO_FIX, ARGPARSE, NO_HEAD, USER_FILES = (
    "traceback", "accepted silently", "too late", "no fix", "argparse usage", "no score head", "user files"
)  # fmt: skip


# ------------------------------------------------------------------------------------------ fixtures
def write(ws: Path, name: str, content: str | bytes) -> str:
    path = ws / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz") and isinstance(content, str):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


HH_ROW = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}
PAIR = {"prompt": "Q: name a fruit.\nA:", "chosen": " apple.", "rejected": " chair."}
VOTE = {"prompt": "Q", "response_a": "a", "response_b": "b", "votes": [1, 0, 1]}


def pipeline_config(ws: Path, patch: dict | None = None, **sections) -> str:
    """A smoke-sized demo config (if a case were wrongly accepted it would train for seconds, not minutes) with
    ``patch`` (dotted keys) applied, written to ws/cfg.yaml."""
    cfg = json.loads(json.dumps(DEMO))
    cfg["output_dir"] = str(ws / "run")
    cfg["lab"].update(demonstrations=100, comparisons=200, eval_comparisons=60, rl_prompts=64)
    cfg["sft"].update(max_steps=2, save_steps=1)
    cfg["reward"].update(max_steps=2, save_steps=1)
    cfg["ppo"].update(total_episodes=64, per_device_train_batch_size=8, gradient_accumulation_steps=4)
    cfg["gate"]["override"] = True
    for key, value in (patch or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return write(ws, "cfg.yaml", yaml.safe_dump(cfg))


def run(ws: Path, patch: dict | None = None, *extra: str) -> list[str]:
    return ["rlhfkit", "run", pipeline_config(ws, patch), *extra]


def recipe(name: str, ws: Path, *extra: str, config: str | None = None) -> list[str]:
    """A lab recipe config with its output in the workspace and the test models (ppo / grpo: a reward model)."""
    config = config or str(REPO / "configs" / "lab" / f"{name}.yaml")
    argv = [f"recipe:{name}", "--config", config, "--output_dir", str(ws / "out")]
    argv += ["--model_name_or_path", MODELS["policy"]]
    if name in ("ppo", "grpo") and "--reward_model_path" not in extra:
        argv += ["--reward_model_path", MODELS["reward"]]
    return argv + list(extra)


def model_folder(ws: Path, name: str, *, config: bool = True, tokenizer: bool = True) -> str:
    """A copy of the nano policy's folder, without its config or its tokenizer files."""
    dst = ws / name
    shutil.copytree(MODELS["policy"], dst)
    if not config:
        (dst / "config.json").unlink()
    if not tokenizer:
        for p in dst.glob("tokenizer*"):
            p.unlink()
    return str(dst)


MODELS: dict[str, str] = {}  # filled by the `models` fixture: a nano causal LM and a reward model made from it


@pytest.fixture(scope="module", autouse=True)
def models(nano_model, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward = tmp_path_factory.mktemp("reward") / "model"
    model = AutoModelForSequenceClassification.from_pretrained(nano_model, num_labels=1)
    model.config.pad_token_id = AutoTokenizer.from_pretrained(nano_model).pad_token_id
    model.save_pretrained(reward)
    AutoTokenizer.from_pretrained(nano_model).save_pretrained(reward)
    MODELS.update(policy=str(nano_model), reward=str(reward))
    yield
    MODELS.clear()


# ------------------------------------------------------------------------------------------ the corpus
@dataclass
class Case:
    id: str
    kind: str  # one of the classes above
    argv: Callable[[Path], list[str]]  # builds the workspace's files; returns the command
    names: str  # regex the error line must match: it names the field / row / file


CASES = [
    # -- raises a traceback -------------------------------------------------------------------------------------
    Case(
        "lr-list",
        TRACEBACK,
        lambda ws: run(ws, {"reward.learning_rate": [0.1, 0.2]}),
        r"reward\.learning_rate=\[0\.1, 0\.2\] is not a number",
    ),
    Case(
        "lr-negative",
        TRACEBACK,
        lambda ws: run(ws, {"sft.learning_rate": -1e-3}),
        r"sft\.learning_rate=-0\.001: must be > 0",
    ),
    Case(
        "batch-0",
        TRACEBACK,
        lambda ws: run(ws, {"sft.per_device_train_batch_size": 0}),
        r"sft\.per_device_train_batch_size=0: must be >= 1",
    ),
    Case("seed-abc", TRACEBACK, lambda ws: run(ws, {"seed": "abc"}), r"seed='abc' must be a whole number"),
    Case(
        "eval-fraction-1.5",
        TRACEBACK,
        lambda ws: run(ws, {"data.eval_fraction": 1.5}),
        r"data\.eval_fraction=1\.5: must be in \[0, 1\)",
    ),
    Case(
        "yaml-syntax",
        TRACEBACK,
        lambda ws: ["rlhfkit", "run", write(ws, "bad.yaml", "output_dir: runs/x\nsft: {max_steps: 3\n")],
        r"bad\.yaml' is not valid YAML at line \d+, column \d+",
    ),
    Case(
        "yaml-not-utf8",
        TRACEBACK,
        lambda ws: ["rlhfkit", "run", write(ws, "bad.yaml", b"output_dir: r\xe9sum\xe9\n")],
        r"bad\.yaml' is not UTF-8 text",
    ),
    Case(
        "model-no-config",
        TRACEBACK,
        lambda ws: run(ws, {"model.model_name_or_path": model_folder(ws, "m", config=False)}),
        r"model\.model_name_or_path='.*/m' has no config\.json",
    ),
    Case(
        "model-no-tokenizer",
        TRACEBACK,
        lambda ws: run(ws, {"model.model_name_or_path": model_folder(ws, "m", tokenizer=False)}),
        r"model\.model_name_or_path='.*/m' has no tokenizer files",
    ),
    Case(
        "sft-empty",
        TRACEBACK,
        lambda ws: run(ws, {"data.sft": write(ws, "sft.jsonl", "")}),
        r"data\.sft='.*sft\.jsonl' has no rows",
    ),
    Case(
        "sft-malformed",
        TRACEBACK,
        lambda ws: run(ws, {"data.sft": write(ws, "sft.jsonl", '{"prompt": "a", \n')}),
        r"data\.sft='.*sft\.jsonl' line 1 is not valid JSON",
    ),
    Case(
        "sft-not-utf8",
        TRACEBACK,
        lambda ws: run(ws, {"data.sft": write(ws, "sft.jsonl", b'{"text": "caf\xe9"}\n')}),
        r"data\.sft='.*sft\.jsonl' is not UTF-8 text",
    ),
    Case(
        "prefs-not-gzip",
        TRACEBACK,
        lambda ws: run(ws, {"data.preferences": write(ws, "p.jsonl.gz", jsonl(PAIR).encode())}),
        r"data\.preferences='.*p\.jsonl\.gz' is not gzip-compressed",
    ),
    Case(
        "prompts-csv-not-gzip",
        TRACEBACK,
        lambda ws: run(ws, {"data.prompts": write(ws, "p.csv.gz", b"prompt\nhi\n")}),
        r"data\.prompts='.*p\.csv\.gz' is not gzip-compressed",
    ),
    Case(
        "sft-parquet-garbage",
        TRACEBACK,
        lambda ws: run(ws, {"data.sft": write(ws, "sft.parquet", b"PAR1 not really")}),
        r"data\.sft='.*sft\.parquet' is not a readable Parquet file",
    ),
    Case(
        "prompts-json-object",
        TRACEBACK,
        lambda ws: run(ws, {"data.prompts": write(ws, "p.json", '{"prompt": "x"}')}),
        r"data\.prompts='.*p\.json' holds a JSON dict, not a list",
    ),
    Case(
        "output-dir-file",
        TRACEBACK,
        lambda ws: run(ws, {"output_dir": write(ws, "taken", "my notes")}),
        r"output_dir='.*taken' is a file",
    ),
    Case(
        "output-dir-unwritable",
        TRACEBACK,
        lambda ws: run(ws, {"output_dir": "/proc/1/rlhfkit-run"}),
        r"output_dir='/proc/1/rlhfkit-run': '/proc/1' is not writable",
    ),
    Case(
        "output-under-file",
        TRACEBACK,
        lambda ws: run(ws, {"output_dir": write(ws, "f", "x") + "/run"}),
        r"output_dir='.*f/run': '.*f' is a file",
    ),
    Case(
        "convert-out-under-file",
        TRACEBACK,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "p.jsonl", jsonl(PAIR)),
            "--format",
            "columns",
            "--out",
            write(ws, "f", "x") + "/pairs.jsonl",
        ],
        r"--out '.*f/pairs\.jsonl': '.*f' is a file",
    ),
    Case(
        "convert-not-utf8",
        TRACEBACK,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "p.jsonl", b'{"prompt": "\xff"}\n'),
            "--format",
            "columns",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"p\.jsonl' is not UTF-8 text",
    ),
    Case(
        "convert-not-gzip",
        TRACEBACK,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "hh.jsonl.gz", jsonl(HH_ROW).encode()),
            "--format",
            "hh",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"hh\.jsonl\.gz' is not gzip-compressed",
    ),
    Case(
        "agreement-malformed",
        TRACEBACK,
        lambda ws: ["rlhfkit", "data", "agreement", write(ws, "v.jsonl", '{"prompt": \n')],
        r"v\.jsonl' line 1 is not valid JSON",
    ),
    Case(
        "agreement-csv-not-utf8",
        TRACEBACK,
        lambda ws: ["rlhfkit", "data", "agreement", write(ws, "v.csv", b"prompt,response_a\n\xff,b\n")],
        r"v\.csv' is not UTF-8 text",
    ),
    Case(
        "eval-rm-no-config",
        TRACEBACK,
        lambda ws: [
            "rlhfkit",
            "eval-rm",
            model_folder(ws, "rm", config=False),
            write(ws, "p.jsonl", jsonl(PAIR)),
            "--out",
            str(ws / "rep"),
        ],
        r"MODEL='.*rm' has no config\.json",
    ),
    Case(
        "eval-rm-data-empty",
        TRACEBACK,
        lambda ws: ["rlhfkit", "eval-rm", MODELS["reward"], write(ws, "p.jsonl", "\n"), "--out", str(ws / "rep")],
        r"DATA='.*p\.jsonl' has no rows",
    ),
    Case(
        "recipe-sft-bad-preset",
        TRACEBACK,
        lambda ws: recipe("sft", ws, "--preset", "qlora8"),
        r"preset='qlora8' is not a method preset",
    ),
    Case(
        "recipe-reward-lr-list",
        TRACEBACK,
        lambda ws: recipe(
            "reward",
            ws,
            config=write(
                ws,
                "r.yaml",
                yaml.safe_dump(
                    {**yaml.safe_load((REPO / "configs/lab/reward.yaml").read_text()), "learning_rate": [0.1, 0.2]}
                ),
            ),
        ),
        r"learning_rate=\[0\.1, 0\.2\] is not a number",
    ),
    Case(
        "recipe-sft-lr-text",
        TRACEBACK,
        lambda ws: recipe("sft", ws, "--learning_rate", "fast"),
        r"learning_rate='fast' is not a number",
    ),
    Case(
        "recipe-grpo-one-generation",
        TRACEBACK,
        lambda ws: recipe("grpo", ws, "--num_generations", "1"),
        r"num_generations=1: must be >= 2",
    ),
    Case(
        "recipe-sft-data-missing",
        TRACEBACK,
        lambda ws: recipe("sft", ws, "--dataset", str(ws / "nope.jsonl")),
        r"dataset='.*nope\.jsonl' not found",
    ),
    Case(
        "recipe-sft-output-file",
        TRACEBACK,
        lambda ws: recipe("sft", ws, "--output_dir", write(ws, "out.txt", "mine")),
        r"output_dir='.*out\.txt' is a file",
    ),
    Case(
        "recipe-instructgpt-bad-key",
        TRACEBACK,
        lambda ws: ["instructgpt", "--config", pipeline_config(ws, {"sft.max_len": 5})],
        r"unknown SFTConfig field\(s\) \['sft\.max_len'\]",
    ),
    # -- accepted silently ---------------------------------------------------------------------------------------
    Case("lr-zero", SILENT, lambda ws: run(ws, {"reward.learning_rate": 0}), r"reward\.learning_rate=0: must be > 0"),
    Case("kl-negative", SILENT, lambda ws: run(ws, {"ppo.kl_coef": -0.1}), r"ppo\.kl_coef=-0\.1: must be >= 0"),
    Case(
        "episodes-negative",
        SILENT,
        lambda ws: run(ws, {"ppo.total_episodes": -5}),
        r"ppo\.total_episodes=-5: must be >= 1",
    ),
    Case(
        "episodes-below-a-batch",
        SILENT,
        lambda ws: run(ws, {"ppo.total_episodes": 10}),
        r"ppo: total_episodes=10 is less than one update's batch",
    ),
    Case("grpo-beta-negative", SILENT, lambda ws: run(ws, {"grpo.beta": -1.0}), r"grpo\.beta=-1\.0: must be >= 0"),
    Case(
        "monitor-kl-limit-0", SILENT, lambda ws: run(ws, {"monitor.kl_limit": 0}), r"monitor\.kl_limit=0: must be > 0"
    ),
    Case(
        "monitor-bad-action",
        SILENT,
        lambda ws: run(ws, {"monitor.kl_limit_action": "halt"}),
        r"monitor\.kl_limit_action='halt' must be one of 'warn', 'stop', 'off'",
    ),
    Case(
        "plan-batch-0",
        SILENT,
        lambda ws: ["rlhfkit", "plan", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--stage", "sft", "--batch-size", "0"],
        r"batch_size=0 must be a whole number >= 1 \(--batch-size\)",
    ),
    Case(
        "plan-gpu-negative",
        SILENT,
        lambda ws: ["rlhfkit", "plan", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--stage", "sft", "--gpu", "-8"],
        r"gpu=-8\.0 must be the GPU memory in GB, e\.g\. --gpu 24",
    ),
    Case(
        "plan-config-unknown-key",
        SILENT,
        lambda ws: [
            "rlhfkit",
            "plan",
            "--config",
            pipeline_config(
                ws, {"ppo.kl_coeff": 0.1, "model.model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct", "model.gpu": 24}
            ),
        ],
        r"unknown PPOConfig field\(s\) \['ppo\.kl_coeff'\] \(did you mean ppo\.kl_coef\?\)",
    ),
    Case(
        "recipe-ppo-kl-negative",
        SILENT,
        lambda ws: recipe("ppo", ws, "--kl_coef", "-0.5"),
        r"kl_coef=-0\.5: must be >= 0",
    ),
    Case(
        "recipe-reward-min-accuracy",
        SILENT,
        lambda ws: recipe("reward", ws, "--min_accuracy", "1.5"),
        r"min_accuracy=1\.5: must be in \[0, 1\]",
    ),
    # -- found too late (after earlier stages trained) ------------------------------------------------------------
    Case(
        "gate-1.5",
        TOO_LATE,
        lambda ws: run(ws, {"gate.min_accuracy": 1.5}),
        r"gate\.min_accuracy=1\.5: must be in \[0, 1\]",
    ),
    Case(
        "noise-length",
        TOO_LATE,
        lambda ws: run(ws, {"lab.noise": [0.1, 0.2]}),
        r"lab\.noise has 2 values for labelers=5",
    ),
    Case(
        "labelers-per-item",
        TOO_LATE,
        lambda ws: run(ws, {"lab.labelers_per_item": 9}),
        r"lab\.labelers_per_item=9 is more than labelers=5",
    ),
    Case(
        "sft-missing-file",
        TOO_LATE,
        lambda ws: run(ws, {"data.sft": str(ws / "nope.jsonl")}),
        r"data\.sft='.*nope\.jsonl' not found",
    ),
    Case(
        "sft-no-columns",
        TOO_LATE,
        lambda ws: run(ws, {"data.sft": write(ws, "sft.jsonl", jsonl({"question": "q", "answer": "a"}))}),
        r"data\.sft='.*sft\.jsonl' has columns \['answer', 'question'\]; the SFT stage needs prompt\+completion or",
    ),
    Case(
        "prompts-no-prompt",
        TOO_LATE,
        lambda ws: run(ws, {"data.prompts": write(ws, "p.csv", "question\nhi\n")}),
        r"data\.prompts='.*p\.csv' has columns \['question'\]; the RL stage needs prompt",
    ),
    Case(
        "prefs-hh-columns",
        TOO_LATE,
        lambda ws: run(
            ws,
            {
                "data.preferences": write(ws, "p.jsonl", jsonl({"prompt": "q", "good": "a", "bad": "b"})),
                "data.preference_format": "hh",
            },
        ),
        r"data\.preferences='.*p\.jsonl' has columns .*, not chosen\+rejected that preference format 'hh' reads",
    ),
    Case(
        "prefs-options-unknown",
        TOO_LATE,
        lambda ws: run(
            ws,
            {
                "data.preferences": write(ws, "v.jsonl", jsonl(VOTE)),
                "data.preference_format": "votes",
                "data.preference_options": {"labeler_col": "a,b"},
            },
        ),
        r"data\.preference_options: unknown option\(s\) \['labeler_col'\] \(did you mean labeler_cols\?\)",
    ),
    Case(
        "prefs-labeler-columns-missing",
        TOO_LATE,
        lambda ws: run(
            ws,
            {
                "data.preferences": write(ws, "v.csv", "prompt,response_a,response_b,a1\nq,x,y,1\n"),
                "data.preference_format": "votes",
                "data.preference_options": {"labeler_cols": "a1,a2"},
            },
        ),
        r"data\.preferences='.*v\.csv' has columns .*, not a2 that preference format 'votes' reads",
    ),
    Case(
        "prefs-undetectable",
        TOO_LATE,
        lambda ws: run(ws, {"data.preferences": write(ws, "p.jsonl", jsonl({"text": "x"}))}),
        r"data\.preferences='.*p\.jsonl': .*cannot tell the preference format from columns \['text'\]",
    ),
    Case(
        "prefs-folder-no-split",
        TOO_LATE,
        lambda ws: run(
            ws, {"data.preferences": os.path.dirname(write(ws, "hh/train.jsonl", jsonl(HH_ROW))), "data.split": "test"}
        ),
        r"data\.preferences='.*hh' has no files for split 'test'",
    ),
    Case(
        "prefs-no-eval-pairs",
        TOO_LATE,
        lambda ws: run(ws, {"data.preferences": write(ws, "p.jsonl", jsonl(PAIR)), "data.eval_fraction": 0}),
        r"data\.eval_fraction=0 holds out no preference pairs",
    ),
    Case(
        "reward-soft-labels-lab",
        TOO_LATE,
        lambda ws: run(ws, {"reward.soft_labels": True}),
        r"reward\.soft_labels=true, but data\.preferences=lab gives hard labels \(no probability 'p'\); give a judge",
    ),
    Case(
        "reward-soft-labels-no-p",
        TOO_LATE,
        lambda ws: run(ws, {"reward.soft_labels": True, "data.preferences": write(ws, "p.jsonl", jsonl(PAIR))}),
        r"reward\.soft_labels=true, but data\.preferences='.*p\.jsonl' has no 'p' or 'probability' column",
    ),
    Case(
        "reward-soft-labels-rankings",
        TOO_LATE,
        lambda ws: run(
            ws,
            {
                "reward.soft_labels": True,
                "reward.group_rankings": True,
                "data.preferences": write(ws, "p.jsonl", jsonl(PAIR | {"p": 0.7})),
            },
        ),
        r"reward: soft_labels=True with group_rankings=True: soft labels apply to pairwise rows",
    ),
    Case(
        "model-missing",
        TOO_LATE,
        lambda ws: run(ws, {"model.model_name_or_path": str(ws / "runs" / "sft" / "model")}),
        r"model\.model_name_or_path='.*runs/sft/model' does not exist",
    ),
    Case(
        "layout-shared-full",
        TOO_LATE,
        lambda ws: run(ws, {"rl.layout": "shared"}),
        r"rl\.layout=shared keeps policy and value as LoRA adapters",
    ),
    Case(
        "grpo-generations",
        TOO_LATE,
        lambda ws: run(ws, {"rl.algorithm": "grpo", "grpo.num_generations": 3}),
        r"grpo: generation_batch_size \(64\) must be divisible by num_generations \(3\)",
    ),
    Case(
        "recipe-ppo-reward-missing",
        TOO_LATE,
        lambda ws: recipe("ppo", ws, "--reward_model_path", str(ws / "runs" / "reward" / "model")),
        r"reward_model_path='.*runs/reward/model' does not exist",
    ),
    Case(
        "recipe-reward-votes-columns",
        TOO_LATE,
        lambda ws: recipe("reward", ws, "--dataset", write(ws, "v.jsonl", jsonl(PAIR)), "--dataset_format", "votes"),
        r"dataset='.*v\.jsonl' has columns .*, not response_a\+response_b\+votes that preference format 'votes' reads",
    ),
    Case(
        "recipe-grpo-prompts",
        TOO_LATE,
        lambda ws: recipe("grpo", ws, "--dataset", write(ws, "p.parquet", b"")),
        r"dataset='.*p\.parquet' is not a readable Parquet file",
    ),
    # -- no fix in the message ------------------------------------------------------------------------------------
    Case(
        "convert-input-missing",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            str(ws / "nope.jsonl"),
            "--format",
            "hh",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"INPUT='.*nope\.jsonl' not found; check the path",
    ),
    Case(
        "convert-no-pairs",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "p.jsonl", jsonl(PAIR | {"chosen": None})),
            "--format",
            "columns",
            "--on-bad-row",
            "skip",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"no preference pairs: .*p\.jsonl.*; check the format and column names",
    ),
    Case(
        "agreement-all-ties",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "agreement",
            write(ws, "v.jsonl", jsonl(VOTE | {"votes": [1, 0]})),
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"no preference pairs left after agreement filtering: .*v\.jsonl.*; lower min_agreement",
    ),
    Case(
        "eval-rm-data-missing",
        NO_FIX,
        lambda ws: ["rlhfkit", "eval-rm", MODELS["reward"], str(ws / "nope.jsonl"), "--out", str(ws / "rep")],
        r"DATA='.*nope\.jsonl' not found; check the path",
    ),
    Case(
        "run-config-missing",
        NO_FIX,
        lambda ws: ["rlhfkit", "run", str(ws / "nope.yaml")],
        r"config file '.*nope\.yaml' not found; give the path of a YAML file",
    ),
    Case(
        "convert-hh-transcript",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "hh.jsonl", jsonl(HH_ROW | {"chosen": "Hi there"})),
            "--format",
            "hh",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"hh\.jsonl: row 1: column 'chosen' has text before the first Human turn.*HH transcripts start with",
    ),
    Case(
        "convert-columns-missing",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "p.csv", "question,good,bad\nq,a,b\n"),
            "--format",
            "columns",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"p\.csv: missing column 'prompt' .*--prompt-col",
    ),
    Case(
        "convert-votes-width",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "v.jsonl", jsonl(VOTE, VOTE | {"votes": [1, 0]})),
            "--format",
            "votes",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"v\.jsonl: row 2: column 'votes' has 2 votes but earlier rows have 3.*use an empty value",
    ),
    Case(
        "convert-scores-items",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "s.json", json.dumps([{"prompt": "q", "completions": ["a", "b"]}])),
            "--format",
            "scores",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"s\.json: row 1: completion 0 of column 'completions' is not a dict.*--text-key",
    ),
    Case(
        "convert-identical",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "p.jsonl", jsonl(PAIR | {"rejected": PAIR["chosen"]})),
            "--format",
            "columns",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"p\.jsonl: row 1: chosen is identical to rejected; drop the row",
    ),
    Case(
        "set-without-equals",
        NO_FIX,
        lambda ws: run(ws, None, "--set", "sft.max_steps"),
        r"--set 'sft\.max_steps': use KEY=VALUE",
    ),
    Case(
        "convert-rankings-length",
        NO_FIX,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "r.jsonl", jsonl({"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 1]})),
            "--format",
            "rankings",
            "--out",
            str(ws / "o.jsonl"),
        ],
        r"r\.jsonl: row 1: column 'ranking' must be a list of 3 numbers",
    ),
    Case(
        "prompts-hub-missing",
        TOO_LATE,
        lambda ws: run(ws, {"data.prompts": "nobody/no-such-prompts"}),
        r"data\.prompts='nobody/no-such-prompts' split 'train' cannot be opened \(offline",
    ),
    # -- argparse's multi-line usage --------------------------------------------------------------------------------
    Case(
        "convert-bad-format",
        ARGPARSE,
        lambda ws: ["rlhfkit", "data", "convert", "x.jsonl", "--format", "bogus", "--out", "o.jsonl"],
        r"argument --format: invalid choice: 'bogus' \(choose from .*hh.*votes",
    ),
    Case(
        "convert-missing-out",
        ARGPARSE,
        lambda ws: ["rlhfkit", "data", "convert", "x.jsonl", "--format", "hh"],
        r"the following arguments are required: --out",
    ),
    Case(
        "presets-bad-stage",
        ARGPARSE,
        lambda ws: ["rlhfkit", "presets", "show", "24", "--stage", "dqn"],
        r"argument --stage: invalid choice: 'dqn' \(choose from .*sft",
    ),
    Case(
        "plan-bad-preset",
        ARGPARSE,
        lambda ws: ["rlhfkit", "plan", "--model", "m", "--stage", "sft", "--preset", "qlora8"],
        r"argument --preset: invalid choice: 'qlora8'",
    ),
    Case(
        "eval-rm-bad-format",
        ARGPARSE,
        lambda ws: ["rlhfkit", "eval-rm", "m", "d.jsonl", "--format", "votes"],
        r"argument --format: invalid choice: 'votes' \(choose from .*hh",
    ),
    Case(
        "unknown-command",
        ARGPARSE,
        lambda ws: ["rlhfkit", "trian"],
        r"argument COMMAND: invalid choice: 'trian' \(choose from .*run",
    ),
    Case(
        "run-missing-config", ARGPARSE, lambda ws: ["rlhfkit", "run"], r"the following arguments are required: config"
    ),
    Case(
        "plan-batch-text",
        ARGPARSE,
        lambda ws: ["rlhfkit", "plan", "--model", "m", "--stage", "sft", "--batch-size", "eight"],
        r"argument --batch-size: invalid int value: 'eight'",
    ),
    Case(
        "run-bad-from",
        ARGPARSE,
        lambda ws: run(ws, None, "--from", "rewards"),
        r"--from 'rewards' is not a stage; choose one of",
    ),
    Case(
        "instructgpt-bad-until",
        ARGPARSE,
        lambda ws: ["instructgpt", "--config", pipeline_config(ws), "--until", "rlhf"],
        r"argument --until: invalid choice: 'rlhf' \(choose from .*final_eval",
    ),
    # -- a reward model without a trained score head ---------------------------------------------------------------
    Case(
        "eval-rm-causal-lm",
        NO_HEAD,
        lambda ws: [
            "rlhfkit",
            "eval-rm",
            MODELS["policy"],
            write(ws, "p.jsonl", jsonl(PAIR)),
            "--out",
            str(ws / "rep"),
        ],
        r"MODEL='.*' is a LlamaForCausalLM without a trained score head",
    ),
    Case(
        "recipe-ppo-causal-reward",
        NO_HEAD,
        lambda ws: recipe("ppo", ws, "--reward_model_path", MODELS["policy"]),
        r"reward_model_path='.*' is a LlamaForCausalLM without a trained score head",
    ),
    Case(
        "recipe-grpo-reward-no-config",
        NO_HEAD,
        lambda ws: recipe("grpo", ws, "--reward_model_path", model_folder(ws, "rm", config=False)),
        r"reward_model_path='.*rm' has no config\.json",
    ),
    # -- files rlhfkit must never lose -----------------------------------------------------------------------------
    Case(
        "convert-out-existing-folder",
        USER_FILES,
        lambda ws: [
            "rlhfkit",
            "data",
            "convert",
            write(ws, "p.jsonl", jsonl(PAIR)),
            "--format",
            "columns",
            "--out",
            os.path.dirname(write(ws, "mine/keep.txt", "precious")),
        ],
        r"--out '.*mine' is a folder; give a file name",
    ),
    Case(
        "agreement-out-existing-folder",
        USER_FILES,
        lambda ws: [
            "rlhfkit",
            "data",
            "agreement",
            write(ws, "v.jsonl", jsonl(VOTE)),
            "--out",
            os.path.dirname(write(ws, "mine/keep.txt", "precious")),
        ],
        r"--out '.*mine' is a folder; give a file name",
    ),
    Case(
        "run-into-foreign-folder",
        USER_FILES,
        lambda ws: run(ws, {"output_dir": os.path.dirname(write(ws, "project/notes.txt", "precious"))}),
        r"output_dir='.*project' holds files that are not an rlhfkit run's \(notes\.txt\)",
    ),
    Case(
        "run-out-is-file",
        USER_FILES,
        lambda ws: run(ws, None, "--out", write(ws, "results.txt", "precious")),
        r"output_dir='.*results\.txt' is a file",
    ),
    Case(
        "eval-rm-out-file",
        USER_FILES,
        lambda ws: [
            "rlhfkit",
            "eval-rm",
            MODELS["reward"],
            write(ws, "p.jsonl", jsonl(PAIR)),
            "--out",
            write(ws, "rep.txt", "precious"),
        ],
        r"--out='.*rep\.txt' is a file",
    ),
    # -- every other config section -------------------------------------------------------------------------------
    Case(
        "model-gpu",
        TOO_LATE,
        lambda ws: run(ws, {"model.gpu": 7}),
        r"model\.gpu=7 is not a GPU-size preset; choose one of \[8, 12",
    ),
    Case(
        "model-lab-size",
        TOO_LATE,
        lambda ws: run(ws, {"model.model_name_or_path": "lab:huge"}),
        r"model\.model_name_or_path='lab:huge' is not a lab model",
    ),
    Case(
        "lab-demonstrations-0",
        SILENT,
        lambda ws: run(ws, {"lab.demonstrations": 0}),
        r"lab\.demonstrations=0: must be >= 1",
    ),
    Case(
        "agreement-min-2",
        SILENT,
        lambda ws: run(ws, {"agreement.min_agreement": 2}),
        r"agreement\.min_agreement=2: must be in \[0, 1\]",
    ),
    Case(
        "data-format-bogus",
        TOO_LATE,
        lambda ws: run(ws, {"data.preference_format": "pairs"}),
        r"data\.preference_format='pairs' is not a format; choose one of",
    ),
    Case(
        "rl-eval-prompts-0", TRACEBACK, lambda ws: run(ws, {"rl.eval_prompts": 0}), r"rl\.eval_prompts=0: must be >= 1"
    ),
    Case(
        "rl-algorithm",
        TOO_LATE,
        lambda ws: run(ws, {"rl.algorithm": "dqn"}),
        r"rl\.algorithm='dqn' must be one of ppo, grpo, rloo, dpo, best_of_n",
    ),
    Case(
        "best-of-n-rounds-0",
        SILENT,
        lambda ws: run(ws, {"rl.algorithm": "best_of_n", "best_of_n.rounds": 0}),
        r"best_of_n\.rounds=0: must be >= 1",
    ),
    Case(
        "dpo-beta-negative",
        TOO_LATE,
        lambda ws: run(ws, {"rl.algorithm": "dpo", "dpo.beta": -0.1}),
        r"dpo\.beta=-0\.1",
    ),
    Case(
        "rl-eval-temperature-0",
        SILENT,
        lambda ws: run(ws, {"rl.eval_temperature": 0}),
        r"rl\.eval_temperature=0",
    ),
    Case("sft-max-length-0", TRACEBACK, lambda ws: run(ws, {"sft.max_length": 0}), r"sft\.max_length=0: must be >= 1"),
    Case(
        "reward-unknown-key",
        TOO_LATE,
        lambda ws: run(ws, {"reward.learning_rat": 1e-3}),
        r"unknown RewardConfig field\(s\) \['reward\.learning_rat'\] \(did you mean reward\.learning_rate\?\)",
    ),
    Case(
        "gate-override-text",
        TRACEBACK,
        lambda ws: run(ws, {"gate.override": "maybe"}),
        r"gate\.override='maybe' is not true or false",
    ),
    Case(
        "top-level-typo",
        TOO_LATE,
        lambda ws: run(ws, {"monitors": {}}),
        r"unknown key\(s\) \['monitors'\] \(did you mean monitor\?\)",
    ),
    Case(
        "section-not-mapping",
        TRACEBACK,
        lambda ws: run(ws, {"sft": [1, 2]}),
        r"section 'sft' must be a mapping of keys to values, got list",
    ),
    # -- reward-model ensembles --------------------------------------------------------------------------------
    Case(
        "ensemble-size-0",
        TRACEBACK,
        lambda ws: run(ws, {"reward.ensemble_size": 0}),
        r"reward\.ensemble_size=0: must be >= 1",
    ),
    Case(
        "ensemble-size-text",
        TRACEBACK,
        lambda ws: run(ws, {"reward.ensemble_size": "three"}),
        r"reward\.ensemble_size='three' is not a whole number",
    ),
    Case(
        "aggregation-median",
        TOO_LATE,
        lambda ws: run(ws, {"rl.reward_aggregation": "median"}),
        r"rl\.reward_aggregation='median' must be one of mean, min, mean_minus_std",
    ),
    Case(
        "ensemble-coef-negative",
        TRACEBACK,
        lambda ws: run(ws, {"rl.reward_ensemble_coef": -1}),
        r"rl\.reward_ensemble_coef=-1: must be >= 0",
    ),
]


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its content hash (folders: 'dir'), to tell that nothing was written."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def execute(argv: list[str]) -> int:
    """Run a command of the corpus in this process: ``rlhfkit ...``, a recipe (``recipe:NAME``: the same
    ``run_recipe`` its ``__main__`` calls) or ``instructgpt`` (its ``main`` through the same error path)."""
    if argv[0] == "rlhfkit":
        return rlhfkit_main(argv[1:])
    if argv[0] == "instructgpt":
        module = runpy.run_path(str(REPO / "recipes" / "instructgpt.py"))
        return run_guarded(lambda: module["main"](argv[1:]))
    name = argv[0].split(":")[1]
    module = runpy.run_path(str(REPO / "recipes" / f"{name}.py"))
    return run_recipe(module["main"], name, tuple(module[t] for t in RECIPE_TYPES[name]), argv[1:])


RECIPE_TYPES = {  # the dataclasses each recipe's __main__ passes to run_recipe
    "sft": ("ModelArguments", "DataArguments", "SFTConfig"),
    "reward": ("ModelArguments", "DataArguments", "GateArguments", "RewardConfig"),
    "ppo": ("ModelArguments", "DataArguments", "PPOScriptArguments", "MonitorConfig", "PPOConfig"),
    "grpo": ("ModelArguments", "DataArguments", "RewardArguments", "MonitorConfig", "GRPOConfig"),
}


def test_the_corpus_is_large_and_covers_every_class_and_section():
    kinds = Counter(case.kind for case in CASES)
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert set(kinds) == {TRACEBACK, SILENT, TOO_LATE, NO_FIX, ARGPARSE, NO_HEAD, USER_FILES}
    text = " ".join(case.names for case in CASES)
    for section in ("output_dir", "seed", "model", "lab", "data", "agreement", "sft", "reward", "gate", "rl",
                    "ppo", "grpo", "monitor"):  # fmt: skip
        assert re.search(rf"(^|[ '(\[]){section}(\\\.|=|'|:)", text), f"no case for section {section}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    argv = case.argv(ws)
    before = snapshot(ws)
    capsys.readouterr()
    code = execute(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, f"exit code {code}; stderr: {err[-2000:]}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(case.names, lines[0]), lines[0]
    assert re.search(r"; |e\.g\. |choose |did you mean|must be", lines[0]), f"no fix in: {lines[0]}"
    assert snapshot(ws) == before, "the workspace changed"


def test_all_problems_of_a_run_are_reported_at_once(tmp_path, capsys):
    ws = tmp_path / "ws"
    ws.mkdir()
    patch = {"reward.learning_rate": 0, "ppo.kl_coef": -0.1, "seed": "abc", "data.sft": str(ws / "nope.jsonl"),
             "gate.min_accuracy": 1.5, "output_dir": write(ws, "taken", "x")}  # fmt: skip
    assert rlhfkit_main(["run", pipeline_config(ws, patch)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("error: ") for line in lines)
    for key in ("reward.learning_rate", "ppo.kl_coef", "seed", "data.sft", "gate.min_accuracy", "output_dir"):
        assert sum(key in line for line in lines) == 1, key


def test_debug_shows_the_traceback(tmp_path):
    from rlhfkit.core.errors import ConfigError

    with pytest.raises(ConfigError, match="seed='abc'"):
        rlhfkit_main(["--debug", "run", pipeline_config(tmp_path, {"seed": "abc"})])


def test_check_says_config_ok_and_creates_nothing(tmp_path, capsys):
    path = pipeline_config(tmp_path)
    assert rlhfkit_main(["run", path, "--check"]) == 0
    assert capsys.readouterr().out.strip().endswith("config OK")
    assert not (tmp_path / "run").exists()


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_pid(tmp_path, capsys):
    """`rlhfkit run` on a folder whose lock is held by a live process: one line naming its pid, nothing written."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    code = (
        "import json, os, socket, sys, time; "
        f"open({str(run_dir / '.rlhfkit.lock')!r}, 'w').write(json.dumps("
        "{'pid': os.getpid(), 'host': socket.gethostname(), 'started': 'now'})); "
        "print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        path = pipeline_config(tmp_path)
        before = snapshot(tmp_path)
        assert rlhfkit_main(["run", path]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert (
            len(lines) == 1 and f"is in use by rlhfkit run pid {holder.pid} on host {socket.gethostname()}" in lines[0]
        )
        assert snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------------ real processes
def _subprocess(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, **kw)


@pytest.mark.slow
def test_a_recipe_script_prints_one_line_and_exits_2(tmp_path):
    """`python recipes/sft.py` itself (its __main__), and `--debug` for the traceback."""
    cmd = [sys.executable, str(REPO / "recipes" / "sft.py"), "--config", str(REPO / "configs" / "lab" / "sft.yaml")]
    cmd += ["--output_dir", str(tmp_path / "out"), "--learning_rate", "0"]
    done = _subprocess(cmd)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert errors == ["error: learning_rate=0.0: must be > 0 (e.g. learning_rate: 1.0e-5)"]
    assert not (tmp_path / "out").exists()
    debug = _subprocess(cmd + ["--debug"])
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


@pytest.mark.slow
def test_a_recipe_under_accelerate_launch_prints_one_line(tmp_path):
    """Under `accelerate launch` the recipe prints its one `error:` line and exits 2; accelerate's launcher then
    reports the child's non-zero exit (a CalledProcessError traceback of the launcher, unless --quiet: exit 1)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    cmd = [accelerate, "launch", "--quiet", "--cpu", "--num_processes", "1", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "recipes" / "grpo.py")]
    cmd += ["--config", str(REPO / "configs" / "lab" / "grpo.yaml"), "--output_dir", str(tmp_path / "out")]
    cmd += ["--model_name_or_path", "lab:nano", "--beta", "-1"]
    done = _subprocess(cmd, cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and errors[0] == "error: beta=-1.0: must be >= 0 (e.g. beta: 0.04)", done.stderr[
        -3000:
    ]
    assert 'recipes/grpo.py", line' not in done.stderr  # no traceback from the recipe itself
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_kill_during_the_final_save_then_a_rerun_leaves_no_temporary_folder(tmp_path):
    """SIGKILL the run while it renames the finished SFT model into place; the rerun cleans the half-written
    `.model.*.tmp` folder, redoes the stage and finishes with a complete model and nothing temporary."""
    path = pipeline_config(tmp_path)
    kill_at_save = (
        "import os, signal, sys\n"
        "real = os.replace\n"
        "def replace(src, dst, *a, **k):\n"
        "    if str(dst).endswith('/sft/model'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(src, dst, *a, **k)\n"
        "os.replace = replace\n"
        "from rlhfkit.cli import main\n"
        f"sys.exit(main(['run', {path!r}, '--until', 'sft']))\n"
    )
    killed = _subprocess([sys.executable, "-c", kill_at_save])
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert [p.name[:7] for p in (tmp_path / "run" / "sft").glob(".*.tmp")] == [".model."]  # the half-written model
    done = _subprocess([sys.executable, "-m", "rlhfkit.cli", "run", path, "--until", "sft"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[cleanup] removing" in done.stdout and "[sft] resuming" in done.stdout
    assert (tmp_path / "run" / "sft" / "model" / "model.safetensors").exists()
    assert not list((tmp_path / "run").rglob(".*.tmp")) and not (tmp_path / "run" / ".rlhfkit.lock").exists()
