"""Every shipped config parses, every real-model config fits its GPU, recipes run, README and docs name real files."""

import importlib.util
import re
import runpy
import sys
from pathlib import Path

import pytest
import yaml

from rlhfkit.core.arguments import DataArguments, ModelArguments, parse_recipe

REPO = Path(__file__).resolve().parents[1]
CONSTITUTION = REPO / "configs" / "constitution.yaml"  # the judge's principles, a list: tests/feedback/test_judge.py
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p != CONSTITUTION)
PIPELINE_CONFIGS = [p for p in CONFIGS if p.stem == "pipeline"]
RECIPE_CONFIGS = [p for p in CONFIGS if p.parent.name != "accelerate" and p not in PIPELINE_CONFIGS]
HUB_IDS = {
    "qwen2.5-0.5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2.5-1.5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "llama-3.2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
}
MODEL_FOLDERS = sorted(
    p.name for p in (REPO / "configs").iterdir() if p.is_dir() and p.name not in ("accelerate", "lab")
)
STAGES = ("sft", "reward", "ppo", "grpo", "rloo", "dpo", "best_of_n")
RL_SECTIONS = ("ppo", "grpo", "rloo", "dpo", "best_of_n")
LENGTH_FIELD = {
    "sft": "max_length", "reward": "max_length", "ppo": "response_length", "grpo": "max_completion_length",
    "rloo": "max_completion_length", "dpo": "max_length", "best_of_n": "max_completion_length",
}  # fmt: skip


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def test_configs_exist():
    assert len(list((REPO / "configs" / "accelerate").glob("*.yaml"))) == 5
    assert sorted(HUB_IDS) == MODEL_FOLDERS  # every model folder is planned on its hub model
    for folder in MODEL_FOLDERS:
        have = {p.stem for p in (REPO / "configs" / folder).glob("*.yaml")}
        assert set(STAGES) <= have, f"configs/{folder} lacks {sorted(set(STAGES) - have)}"
        assert folder == HUB_IDS[folder].split("/")[-1].lower()
    assert {p.parent.name for p in PIPELINE_CONFIGS} == {"lab", *MODEL_FOLDERS}


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_every_config_starts_with_its_command_and_parses(path):
    text = path.read_text()
    assert text.startswith("# accelerate launch") and isinstance(yaml.safe_load(text), dict)
    lines = text.splitlines()
    if path in RECIPE_CONFIGS:
        assert f"--config {_rel(path)}" in lines[0], f"{path.name}: the command should run this file"
    if path in PIPELINE_CONFIGS:
        assert lines[0] == f"# accelerate launch recipes/instructgpt.py --config {_rel(path)}"
        assert lines[1] == f"# or: rlhfkit run {_rel(path)}"
    for named in re.findall(r"(?:recipes|configs)/[\w./-]+\.(?:py|yaml)", lines[0]):
        assert (REPO / named).exists(), f"{path.name} names {named}, which does not exist"


def _recipe_module(stage: str):
    """recipes/<stage>.py as a module (registered: dataclasses and Trainer pickling look classes up by module)."""
    name = f"{stage}_recipe"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "recipes" / f"{stage}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_config_loads_with_its_parser(path, cpu_only):
    if path.parent.name == "accelerate":
        from accelerate.commands.config.config_args import load_config_from_file

        load_config_from_file(str(path))
        return
    if path in PIPELINE_CONFIGS:
        from rlhfkit.pipeline.config import load_config

        raw = yaml.safe_load(path.read_text())
        cfg = load_config(path)  # builds every training stage's config: a bad key or value raises, naming it
        assert cfg.rl.algorithm in raw and cfg.trainer_config(cfg.rl.algorithm).bf16 is False
        for other in set(RL_SECTIONS) & set(raw) - {cfg.rl.algorithm}:  # a section kept for --set rl.algorithm=...
            load_config(path, {"rl.algorithm": other})
        return
    from rlhfkit.monitors import MonitorConfig

    stage = path.stem
    if stage == "sft":
        from trl import SFTConfig

        types = (ModelArguments, DataArguments, SFTConfig)
    elif stage == "reward":
        from trl import RewardConfig

        types = (ModelArguments, DataArguments, _recipe_module("reward").GateArguments, RewardConfig)
    elif stage == "ppo":
        recipe = _recipe_module("ppo")
        types = (ModelArguments, DataArguments, recipe.PPOScriptArguments, MonitorConfig, recipe.PPOConfig)
    elif stage in ("grpo", "rloo"):
        recipe = _recipe_module(stage)
        config = recipe.GRPOConfig if stage == "grpo" else recipe.RLOOConfig
        types = (ModelArguments, DataArguments, recipe.RewardArguments, MonitorConfig, config)
    elif stage == "dpo":
        recipe = _recipe_module("dpo")
        types = (ModelArguments, DataArguments, recipe.PairArguments, MonitorConfig, recipe.DPOConfig)
    else:
        recipe = _recipe_module("best_of_n")
        types = (ModelArguments, DataArguments, recipe.SelectorArguments, MonitorConfig, recipe.BestOfNConfig)
    parsed = parse_recipe(stage, types, ["--config", str(path)])
    assert parsed[-1].bf16 is False  # precision comes from the hardware, never TRL's bf16 default on a CPU
    if stage in ("ppo", "grpo", "rloo", "best_of_n"):  # RL against the reward stage's model
        assert parsed[2].reward_model_path.endswith("reward/model")
    if stage in ("ppo", "grpo", "rloo", "dpo"):  # with a KL leash
        assert (parsed[-1].kl_coef if stage == "ppo" else parsed[-1].beta) > 0


def test_lab_pipeline_is_the_demo_with_grpo():
    """configs/lab/pipeline.yaml differs from the demo config (rlhfkit/demo.yaml) only in output_dir and algorithm."""
    demo = yaml.safe_load((REPO / "rlhfkit" / "demo.yaml").read_text())
    lab = yaml.safe_load((REPO / "configs" / "lab" / "pipeline.yaml").read_text())
    assert (demo["rl"]["algorithm"], lab["rl"]["algorithm"]) == ("ppo", "grpo")
    for cfg in (demo, lab):
        cfg.pop("output_dir")
        cfg["rl"].pop("algorithm")
    assert lab == demo


@pytest.mark.parametrize("path", [p for p in RECIPE_CONFIGS if p.parent.name != "lab"], ids=_rel)
def test_real_model_configs_fit_their_gpu(path):
    from rlhfkit.planner import GIB, check_config_fits

    cfg = yaml.safe_load(path.read_text())
    hub_id = HUB_IDS[path.parent.name]
    assert str(cfg["model_name_or_path"]) in (hub_id, f"runs/{path.parent.name}/sft/model")
    plan = check_config_fits(path, model=hub_id)  # a later stage's SFT model has the hub model's dimensions
    assert plan.fits, f"{_rel(path)}: {plan.total_bytes / GIB:.1f} GiB on {cfg['gpu']} GB: {plan.verdict}"
    assert plan.gpu_gb == cfg["gpu"] and plan.preset == cfg["preset"]
    if path.stem == "ppo":
        assert plan.settings["layout"] == cfg.get("layout", "shared") == "shared"


@pytest.mark.parametrize("path", [p for p in PIPELINE_CONFIGS if p.parent.name != "lab"], ids=_rel)
def test_real_model_pipeline_configs_fit_their_gpu(path):
    from rlhfkit.planner import GIB, check_pipeline_fits

    raw = yaml.safe_load(path.read_text())
    assert raw["model"]["model_name_or_path"] == HUB_IDS[path.parent.name]
    plans = check_pipeline_fits(path)
    assert list(plans) == ["sft", "reward", raw["rl"]["algorithm"]]
    for stage, plan in plans.items():
        assert plan.fits, f"{_rel(path)} {stage}: {plan.total_bytes / GIB:.1f} GiB of {plan.gpu_gb:g} GB"
        assert (plan.gpu_gb, plan.preset) == (raw["model"]["gpu"], raw["model"]["preset"])
        section = raw[stage]  # the plan used the stage section's batch and lengths, not only the GPU preset's
        assert plan.settings["batch_size"] == section["per_device_train_batch_size"]
        assert plan.settings["grad_accum"] == section["gradient_accumulation_steps"]
        assert plan.settings["seq_len"] == section[LENGTH_FIELD[stage]]
    if "ppo" in plans:
        assert plans["ppo"].settings["layout"] == raw["rl"]["layout"] == "shared"
    for other in set(RL_SECTIONS) & set(raw) - {raw["rl"]["algorithm"]}:  # what `rlhfkit compare` runs
        plan = check_pipeline_fits(path, algorithm=other)[other]
        assert plan.fits, f"{_rel(path)} {other}: {plan.total_bytes / GIB:.1f} GiB of {plan.gpu_gb:g} GB"
        assert plan.settings["seq_len"] == raw[other][LENGTH_FIELD[other]]


def test_readme_and_docs_name_only_existing_files():
    named = {}
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        pattern = r"(?<![\w/.])((?:recipes|configs|bench|scripts|rlhfkit|tests)/[\w./-]+\.(?:py|yaml|sh))"
        for name in re.findall(pattern, page.read_text()):
            named.setdefault(name, page.name)
    assert any(n.startswith("recipes/") for n in named), "the README should name recipes and configs"
    missing = sorted(f"{n} ({page})" for n, page in named.items() if not (REPO / n).exists())
    assert not missing, f"README or docs name files that do not exist: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["sft", "reward"])
def test_recipe_runs_a_few_steps(recipe, tmp_path, monkeypatch, nano_model):
    monkeypatch.chdir(tmp_path)
    model = str(nano_model)
    args = ["--config", str(REPO / "configs" / "lab" / f"{recipe}.yaml"), "--model_name_or_path", model]
    args += ["--output_dir", str(tmp_path / recipe), "--max_steps", "3", "--lab_samples", "200"]
    monkeypatch.setattr(sys, "argv", [f"recipes/{recipe}.py", *args])
    with pytest.raises(SystemExit) as done:  # a recipe exits through rlhfkit's one error path: 0 when it trained
        runpy.run_path(str(REPO / "recipes" / f"{recipe}.py"), run_name="__main__")
    assert done.value.code == 0
    assert (tmp_path / recipe / "model" / "model.safetensors").exists()
