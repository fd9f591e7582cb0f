"""Monitors: each signal fires on a synthetic log sequence showing it (PPO and GRPO key names) and stays quiet on
a healthy one; the stop action ends a real tiny run with a checkpoint; the frozen-reference check."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from rlhfkit.core.errors import ConfigError
from rlhfkit.monitors import (
    SIGNALS,
    FrozenModelCheck,
    FrozenModelError,
    HealthMonitor,
    MonitorConfig,
    build_monitors,
    health_table,
    load_timeline,
    plot_health,
    read_metrics,
    weights_fingerprint,
)

STEPS, ONSET, BATCH = 20, 10, 64  # synthetic runs: 20 logged steps, the symptom from step 10 on


def _args(tmp_path, **kw):
    return TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, fp16=False, report_to=[], disable_tqdm=True, **kw
    )


def _healthy(style: str, t: int) -> dict[str, float]:
    """One log of a healthy run at step t: KL creeps up to 1 nat/seq (0.05 per token of the 20-token answers), the
    reward rises slowly (faster per sqrt(KL) as it goes), the ensemble's spread and the rest are steady."""
    wobble = 0.02 * math.sin(t)
    if style == "ppo":
        return {
            "objective/kl": 0.05 * t,
            "objective/entropy": 40.0,
            "objective/scores": 0.02 * t + wobble,
            "objective/rlhf_reward": 0.01 * t,
            "objective/non_score_reward": -0.01 * t,
            "policy/approxkl_avg": 0.01,
            "policy/clipfrac_avg": 0.05 + wobble,
            "policy/entropy_avg": 2.0 - 0.01 * t,
            "loss/policy_avg": -0.01,
            "loss/value_avg": 0.2,
            "val/ratio": 1.0,
            "val/num_eos_tokens": 60.0,
            "completions/mean_length": 20.0 + 10 * wobble,
            "rewards/ensemble_std/mean": 0.3 + wobble / 2,
        }
    return {
        "loss": 0.0,
        "kl": 0.0025 * t,
        "entropy": 1.5 - 0.005 * t,
        "reward": 0.02 * t + wobble,
        "reward_std": 0.5 + wobble,
        "frac_reward_zero_std": 0.05,
        "clip_ratio/region_mean": 0.01,
        "completions/mean_length": 20.0 + 10 * wobble,
        "completions/clipped_ratio": 0.05,
        "rewards/ensemble_std/mean": 0.3 + wobble / 2,
    }


# signal -> style -> how the symptom changes a healthy log from ONSET on (t: step, logs: the healthy log)
SYMPTOMS = {
    "kl_caution": {"ppo": lambda t, g: {"objective/kl": 10.0}, "grpo": lambda t, g: {"kl": 0.5}},  # 0.5 x 20 tokens
    "kl_limit": {"ppo": lambda t, g: {"objective/kl": 20.0}, "grpo": lambda t, g: {"kl": 1.0}},
    "negative_kl": {"ppo": lambda t, g: {"objective/kl": -1.0}, "grpo": lambda t, g: {"kl": -0.05}},
    "length_drift": {
        "ppo": lambda t, g: {"completions/mean_length": 45.0},
        "grpo": lambda t, g: {"completions/mean_length": 6.0},  # collapse to short answers counts too
    },
    "entropy_collapse": {
        "ppo": lambda t, g: {"policy/entropy_avg": 0.5},
        "grpo": lambda t, g: {"entropy": 0.4},
    },
    "reward_variance": {
        "grpo": lambda t, g: {"frac_reward_zero_std": 0.8},
        "grpo_std": lambda t, g: {"reward_std": 0.01, "frac_reward_zero_std": 0.1},
    },
    "reward_kl_race": {  # KL per starting token gained at 0.0075 per step since the start (healthy: 0.0025)
        "ppo": lambda t, g: {"objective/kl": 0.15 * t, "objective/scores": 0.3 * t},
        "grpo": lambda t, g: {"kl": 0.0075 * t, "reward": 0.3 * t},
    },
    "clipping": {
        "ppo": lambda t, g: {"policy/clipfrac_avg": 0.5},
        "ppo_approxkl": lambda t, g: {"policy/approxkl_avg": 0.3},
        "grpo": lambda t, g: {"clip_ratio/region_mean": 0.45},
    },
    "truncation": {
        "ppo": lambda t, g: {"val/num_eos_tokens": 20.0},  # 20 of 64 responses end: 69% truncated
        "grpo": lambda t, g: {"completions/clipped_ratio": 0.6},
    },
    "ensemble_disagreement": {  # the reward models' spread triples
        "ppo": lambda t, g: {"rewards/ensemble_std/mean": 0.9},
        "grpo": lambda t, g: {"rewards/ensemble_std/mean": 0.9},
    },
    "reward_gain_flattening": {  # the proxy stops rising while the KL keeps growing, faster
        "ppo": lambda t, g: {"objective/scores": 0.02 * ONSET, "objective/kl": 0.05 * t + 0.3 * (t - ONSET)},
        "grpo": lambda t, g: {"reward": 0.02 * ONSET, "kl": 0.0025 * t + 0.015 * (t - ONSET)},
    },
}


EVERY_STEP = {"smoothing_steps": 1, "reward_kl_min_steps": 0, "gain_flattening_min_steps": 0}


def _run(logs_by_step, tmp_path, config=None, monitor=None, start=0):
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    state.global_step, state.train_batch_size = start, BATCH
    # levels judged on each log alone (smoothing_steps=1) and the trends from the start (reward_kl_min_steps=0,
    # gain_flattening_min_steps=0): these tests are about when each condition holds
    monitor = monitor or HealthMonitor(config or MonitorConfig(health_plots=False, **EVERY_STEP))
    monitor.on_train_begin(args, state, control)
    for step, logs in logs_by_step:
        state.global_step = step
        monitor.on_log(args, state, control, logs=dict(logs))
        if control.should_training_stop:
            break
    return monitor, control


def _series(style: str, symptom=None):
    base = "grpo" if style.startswith("grpo") else "ppo"
    out = []
    for t in range(1, STEPS + 1):
        logs = _healthy(base, t)
        if symptom is not None and t >= ONSET:
            logs.update(symptom(t, logs))
        out.append((t, logs))
    return out


@pytest.mark.parametrize("style", ["ppo", "grpo"])
def test_healthy_run_stays_quiet(style, tmp_path):
    monitor, control = _run(_series(style), tmp_path)
    assert monitor.alerts == []
    assert not control.should_training_stop
    assert monitor.last_healthy_step == STEPS and len(monitor.timeline) == STEPS


@pytest.mark.parametrize(
    ("signal", "style"), [(signal, style) for signal, styles in SYMPTOMS.items() for style in styles]
)
def test_each_signal_fires_on_its_symptom(signal, style, tmp_path):
    warn_only = {f"{s}_action": "warn" for s in SIGNALS}  # another signal's stop must not end the run first
    config = MonitorConfig(health_plots=False, **EVERY_STEP, **warn_only)
    monitor, _ = _run(_series(style, SYMPTOMS[signal][style]), tmp_path, config)
    fired = [a for a in monitor.alerts if a.signal == signal]
    assert fired, f"{signal} did not fire; alerts: {[a.signal for a in monitor.alerts]}"
    assert ONSET <= fired[0].step <= ONSET + 5
    assert signal in fired[0].message and len(fired[0].message) > 80  # explains and advises


def test_grpo_kl_is_put_on_the_per_sequence_scale():
    metrics = read_metrics({"kl": 0.1, "reward": 1.0, "completions/mean_length": 30.0})
    assert metrics["stage"] == "grpo" and metrics["kl"] == pytest.approx(3.0)
    ppo = read_metrics({"objective/kl": 3.0, "objective/scores": 1.0, "val/num_eos_tokens": 48.0}, batch_size=64)
    assert ppo["kl"] == 3.0 and ppo["truncation"] == pytest.approx(0.25)
    assert read_metrics({"loss": 1.0, "train_runtime": 3.0}) is None  # not an RL log (e.g. the final summary)
    assert read_metrics({"eval_kl": 1.0, "eval_reward": 1.0}) is None


def test_one_noisy_step_does_not_fire_and_kl_limit_stops(tmp_path):
    spike = _series("ppo")
    spike[ONSET][1]["objective/kl"] = 30.0  # one batch only: alert_patience=2 ignores it
    monitor, control = _run(spike, tmp_path)
    assert monitor.alerts == [] and not control.should_training_stop

    monitor, control = _run(_series("ppo", SYMPTOMS["kl_limit"]["ppo"]), tmp_path)
    assert control.should_training_stop and control.should_save
    assert monitor.stop_step == ONSET + 1 and monitor.last_healthy_step == ONSET - 1
    stop = next(a for a in monitor.alerts if a.action == "stop")  # the first stop alert says what is returned
    assert stop.signal == "kl_limit" and "no checkpoint exists at or before the last healthy step 9" in stop.message
    # no healthy checkpoint yet (this test saves none): the starting policy is returned, not the stopped weights
    assert monitor.returned_step == 0 and "returns the starting policy (step 0)" in monitor.returned_reason


def test_a_step_past_kl_caution_is_not_healthy(tmp_path):
    """KL between kl_caution and kl_limit for 5 steps, then past the limit: the stop returns a step from before the
    caution level was crossed, not the last step under the limit (unless kl_caution is off)."""

    def near_limit(t, logs):  # 2.2 nats over 20 tokens = 0.11 per starting token: above 0.1, below 0.15
        return {"objective/kl": 2.2 if t < ONSET + 5 else 20.0}

    only_kl = {"health_plots": False, "smoothing_steps": 1, "reward_kl_race_action": "off"}  # the jump races too
    monitor, control = _run(_series("ppo", near_limit), tmp_path, MonitorConfig(**only_kl))
    assert control.should_training_stop and monitor.stop_step == ONSET + 6
    assert [a.signal for a in monitor.alerts] == ["kl_caution", "kl_limit"]
    assert monitor.last_healthy_step == ONSET - 1
    monitor, _ = _run(_series("ppo", near_limit), tmp_path, MonitorConfig(**only_kl, kl_caution_action="off"))
    assert monitor.stop_step == ONSET + 6 and monitor.last_healthy_step == ONSET + 4


def test_actions_are_configurable(tmp_path):
    symptom = SYMPTOMS["length_drift"]["ppo"]
    monitor, control = _run(
        _series("ppo", symptom), tmp_path, MonitorConfig(length_drift_action="stop", smoothing_steps=1)
    )
    assert control.should_training_stop and monitor.stop_step is not None
    monitor, control = _run(
        _series("ppo", symptom), tmp_path, MonitorConfig(length_drift_action="off", smoothing_steps=1)
    )
    assert monitor.alerts == [] and not control.should_training_stop
    with pytest.raises(ConfigError, match="kl_limit_action='halt'"):
        MonitorConfig(kl_limit_action="halt")
    with pytest.raises(ConfigError, match=r"kl_limit=15.0 is in nats per token .* \(15 nats at 150 tokens: 0.1\)"):
        MonitorConfig(kl_limit=15.0)  # a per-sequence level from before: one line says how to convert it


def test_timeline_table_plots_and_resume(tmp_path):
    config = MonitorConfig(health_extra_keys=["rewards/gold/mean"], smoothing_steps=1, reward_kl_min_steps=0)
    series = _series("grpo", SYMPTOMS["kl_limit"]["grpo"])
    logs = [(t, {**g, "rewards/gold/mean": 0.5 - 0.01 * (t - 12) ** 2}) for t, g in series]
    monitor, _ = _run(logs, tmp_path, config)
    timeline = load_timeline(tmp_path)
    assert [r["step"] for r in timeline] == list(range(1, ONSET + 2))  # stopped at step 11
    fired = {a["signal"] for a in timeline[-1]["alerts"]}
    assert timeline[-1]["stop"] and fired == {"kl_caution", "kl_limit", "reward_kl_race"}  # 1 nat/token in 10 steps
    assert "rewards/gold/mean" in timeline[0]
    assert monitor.summary()["stop_step"] == ONSET + 1

    from rich.console import Console

    console = Console(record=True, width=140, file=io.StringIO())
    console.print(health_table(timeline, config))
    text = console.export_text()
    assert "stop at step 11" in text and "warn at step 11" in text and "truncation" in text

    paths = plot_health(timeline, tmp_path, series={"gold (offline)": {5: 0.1, 10: 0.2}})
    assert [p.name for p in paths] == ["health_reward_kl.png", "health_length_entropy.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)

    # resuming from step 6 keeps the first 6 records (and so the baselines) and continues the file; the healthy
    # checkpoints on disk from before the interruption are still the ones a stop would average
    for step in (2, 3, 5, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    resumed, _ = _run([(t, g) for t, g in logs if t > 6][:2], tmp_path, config, start=6)
    assert [r["step"] for r in load_timeline(tmp_path)] == list(range(1, 9))
    assert resumed.last_healthy_step == 8
    assert resumed.healthy_checkpoints == [3, 5, 6, 7, 8]  # the newest healthy_average=3 on disk, then new ones


def test_config_parses_like_trl_configs_without_name_clashes(tmp_path):
    from trl import GRPOConfig, TrlParser

    from rlhfkit.rl.ppo.config import PPOConfig

    clash = {f for f in MonitorConfig.__dataclass_fields__} & (
        set(GRPOConfig.__dataclass_fields__) | set(PPOConfig.__dataclass_fields__)
    )
    assert not clash
    yaml = tmp_path / "grpo.yaml"
    yaml.write_text("output_dir: out\nuse_cpu: true\nbf16: false\nkl_limit: 0.12\nkl_limit_action: warn\n")
    grpo, monitor = TrlParser((GRPOConfig, MonitorConfig)).parse_args_and_config(
        ["--config", str(yaml), "--health_extra_keys", "rewards/gold/mean"]
    )
    assert monitor.kl_limit == 0.12 and monitor.kl_limit_action == "warn"
    assert monitor.health_extra_keys == ["rewards/gold/mean"] and grpo.output_dir == "out"


# ============================================================================================== real runs
class _InjectRLMetrics(TrainerCallback):
    """Adds PPO-style metrics to each log of a plain Trainer run; the KL jumps to 20 nats from step 4."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            logs.update(_healthy("ppo", state.global_step))
            if state.global_step >= 4:
                logs["objective/kl"] = 20.0


def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    return LlamaForCausalLM(config)


@pytest.mark.parametrize(("average", "zero3"), [(1, False), (2, False), (3, False), (3, True)])
def test_stop_ends_a_trainer_run_and_the_healthy_checkpoints_are_averaged(average, zero3, tmp_path):
    from safetensors.torch import load_file

    from rlhfkit.rl.healthy import return_healthy

    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 12), generator=g)]
    model, ref = _tiny_llama(), _tiny_llama().requires_grad_(False)
    args = _args(tmp_path, max_steps=20, per_device_train_batch_size=4, logging_steps=1, save_strategy="no")
    config = MonitorConfig(health_plots=False, healthy_average=average)
    callbacks = [_InjectRLMetrics(), *build_monitors(config, frozen={"reference": ref})]
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    assert trainer.state.global_step == 5  # KL far over the limit at steps 4 and 5 (alert_patience=2): stop at 5
    assert (tmp_path / "checkpoint-5" / "model.safetensors").is_file()
    # healthy steps 1-3 were checkpointed as they came; older than the newest `average` deleted (no save_total_limit)
    kept = [f"checkpoint-{s}" for s in range(4 - average, 4)]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [*kept, "checkpoint-5"]
    health = next(cb for cb in callbacks if isinstance(cb, HealthMonitor))
    assert (health.returned_step, health.last_healthy_step) == (3, 3)
    assert health.healthy_checkpoints == health.averaged_steps == list(range(4 - average, 4))
    assert ("the average of the weights of" in health.returned_reason) == (average > 1)
    assert json.loads((tmp_path / "health.jsonl").read_text().splitlines()[-1])["stop"]

    # the model the stage saves: the mean of the kept checkpoints' weights, computed here from their files; under
    # DeepSpeed ZeRO-3 (partitioned weights, marked by ds_id) the newest alone, and the reason says so
    if zero3:
        for param in trainer.model.parameters():
            param.ds_id = 0
        kept, average = kept[-1:], 1
    files = [load_file(str(tmp_path / name / "model.safetensors")) for name in kept]
    metrics = return_healthy(trainer, health)
    assert metrics["averaged_steps"] == health.averaged_steps == [int(k.split("-")[1]) for k in kept]
    assert metrics["returned_step"] == 3 and ("average" in metrics["returned_reason"]) == (average > 1)
    state = trainer.model.state_dict()
    for name in files[0]:
        expected = torch.stack([f[name].float() for f in files]).mean(0)
        torch.testing.assert_close(state[name].float(), expected, rtol=0, atol=1e-6)
    if average > 1:  # the checkpoints differ (training moved the weights), so the average is none of them
        assert not torch.equal(state["model.embed_tokens.weight"], files[-1]["model.embed_tokens.weight"])


def test_a_checkpoint_rotated_away_by_the_stops_save_is_not_averaged(tmp_path):
    """save_total_limit=3: healthy checkpoints 1-3 exist when the stop at 5 chooses them, then the stop's own save
    rotates checkpoint-1 away; the stage averages what is left and says so."""
    from rlhfkit.rl.healthy import return_healthy

    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 12), generator=g)]
    args = _args(tmp_path, max_steps=20, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                 save_total_limit=3)  # fmt: skip
    callbacks = [_InjectRLMetrics(), *build_monitors(MonitorConfig(health_plots=False))]
    trainer = Trainer(model=_tiny_llama(), args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    health = callbacks[1]
    assert health.averaged_steps == [1, 2, 3] and "checkpoint-1, checkpoint-2, checkpoint-3" in health.returned_reason
    assert not (tmp_path / "checkpoint-1").exists()
    metrics = return_healthy(trainer, health)
    assert metrics["averaged_steps"] == [2, 3] and "of checkpoint-2, checkpoint-3:" in metrics["returned_reason"]


def test_a_lora_stop_averages_the_adapters_and_leaves_the_base(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from rlhfkit.rl.healthy import return_healthy

    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 12), generator=g)]
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(_tiny_llama(), lora)
    base = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    args = _args(tmp_path, max_steps=20, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                 learning_rate=1e-2)  # fmt: skip
    callbacks = [_InjectRLMetrics(), *build_monitors(MonitorConfig(health_plots=False, healthy_average=2))]
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    metrics = return_healthy(trainer, callbacks[1])
    assert (metrics["stop_step"], metrics["returned_step"], metrics["averaged_steps"]) == (5, 3, [2, 3])
    files = [load_file(str(tmp_path / f"checkpoint-{s}" / "adapter_model.safetensors")) for s in (2, 3)]
    state = {k.replace(".default", ""): v for k, v in trainer.model.state_dict().items()}
    assert files[0] and not all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    for name in files[0]:
        torch.testing.assert_close(state[name], (files[0][name] + files[1][name]) / 2, rtol=0, atol=1e-6)
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in base.items())  # the base is untouched


def test_the_healthy_checkpoint_survives_save_total_limit(tmp_path, caplog):
    from rlhfkit.rl.healthy import return_healthy

    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 12), generator=g)]
    args = _args(tmp_path, max_steps=20, per_device_train_batch_size=4, logging_steps=1, save_steps=1,
                 save_total_limit=1)  # fmt: skip
    callbacks = [_InjectRLMetrics(), *build_monitors(MonitorConfig(health_plots=False))]
    with caplog.at_level("WARNING", logger="rlhfkit.monitors.health"):
        trainer = Trainer(model=_tiny_llama(), args=args, train_dataset=data, callbacks=callbacks)
        trainer.train()
    assert "save_total_limit=1 keeps the newest healthy checkpoint" in caplog.text  # fewer to average: said
    # the trainer saves every step and keeps one; the monitor's healthy checkpoint-3 is protected from rotation
    assert "checkpoint-3" in [p.name for p in tmp_path.glob("checkpoint-*")]
    health = callbacks[1]
    assert health.returned_step == 3 and health.averaged_steps == [3]  # 1 and 2 were rotated away before the stop
    assert return_healthy(trainer, health)["averaged_steps"] == [3]


def test_stop_ends_a_tiny_grpo_run_and_the_reference_stays_frozen(nano_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlhfkit.lab import make_prompts

    config = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, fp16=False, max_steps=6, per_device_train_batch_size=4,
        num_generations=4, max_completion_length=8, learning_rate=1e-2, beta=0.04, logging_steps=1,
        save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(nano_model),
        reward_funcs=lambda completions, **kw: [len(c) / 10 for c in completions],
        args=config,
        train_dataset=Dataset.from_dict({"prompt": make_prompts(8)}),
        processing_class=AutoTokenizer.from_pretrained(nano_model),
    )
    # KL is exactly 0 at step 1 (policy == reference) and positive after the first update: stop at step 2.
    callbacks = build_monitors(MonitorConfig(kl_limit=1e-6, alert_patience=1), trainer=trainer)
    assert isinstance(callbacks[1], FrozenModelCheck) and list(callbacks[1].models) == ["reference"]
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train()  # the frozen check verifies the reference at the end (it raises otherwise)
    assert trainer.state.global_step == 2 and (tmp_path / "checkpoint-2").is_dir()
    assert not any(p.requires_grad for p in trainer.ref_model.parameters())  # TRL builds it with grads on
    timeline = load_timeline(tmp_path)
    assert timeline[0]["stage"] == "grpo" and timeline[0]["kl"] == 0.0 and timeline[1]["kl"] > 0
    assert (tmp_path / "health_reward_kl.png").is_file()


# ============================================================================================== frozen check
def _frozen_run(ref, tmp_path, optimizer=None, mutate=None):
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    check = FrozenModelCheck({"reference": ref}, every_n_steps=0)
    check.on_train_begin(args, state, control, optimizer=optimizer)
    if mutate:
        mutate(ref)
    check.on_train_end(args, state, control)


def test_frozen_check_passes_an_untouched_reference(tmp_path):
    _frozen_run(_tiny_llama().requires_grad_(False), tmp_path)


def test_frozen_check_catches_an_unfrozen_modified_reference(tmp_path):
    def train_one_tensor(ref):
        ref.model.layers[1].mlp.up_proj.weight.requires_grad_(True)
        with torch.no_grad():
            ref.model.layers[1].mlp.up_proj.weight[0, 0] += 1e-6  # one float, one ulp-ish change

    with pytest.raises(FrozenModelError, match=r"1 of \d+ tensors changed \(model\.layers\.1\.mlp\.up_proj\.weight\)"):
        _frozen_run(_tiny_llama().requires_grad_(False), tmp_path, mutate=train_one_tensor)


def test_frozen_check_refuses_a_reference_in_the_optimizer(tmp_path):
    policy = _tiny_llama()
    optimizer = torch.optim.AdamW(policy.parameters())
    with pytest.raises(FrozenModelError, match="in the optimizer.*policy object itself"):
        _frozen_run(policy, tmp_path, optimizer=optimizer)  # ref_model = model, the classic mistake


def test_fingerprint_is_bit_exact_for_4bit_weights():
    bnb = pytest.importorskip("bitsandbytes")
    layer = bnb.nn.Linear4bit(32, 32, quant_type="nf4", compute_dtype=torch.float32).to("cpu")
    before = weights_fingerprint(layer)
    assert weights_fingerprint(layer) == before
    with torch.no_grad():
        layer.weight.data[0, 0] ^= 1  # one bit of the packed NF4 weights
    assert weights_fingerprint(layer)["weight"] != before["weight"]
    layer.weight.data[0, 0] ^= 1
    layer.weight.quant_state.absmax.view(-1).view(torch.uint8)[0] ^= 1  # the quantisation scale is hashed too
    assert weights_fingerprint(layer)["weight"] != before["weight"]


def test_signal_table_covers_every_signal():
    assert set(SIGNALS) == set(SYMPTOMS)


def test_peft_reference_is_the_frozen_base(tmp_path):
    """With LoRA the reference is the policy with its adapter disabled: the base must not move, the adapter may."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(_tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    trainer = SimpleNamespace(model=policy, ref_model=None, reward_funcs=[lambda **kw: [0.0]])
    args, state, control = _args(tmp_path), TrainerState(), TrainerControl()
    health, check = build_monitors(MonitorConfig(), trainer=trainer)
    assert list(check.models) == ["reference"] and all("lora_" in p for p in check.exclude["reference"])
    check.on_train_begin(
        args, state, control, optimizer=torch.optim.AdamW(p for p in policy.parameters() if p.requires_grad)
    )
    with torch.no_grad():
        next(p for n, p in policy.named_parameters() if "lora_B" in n).add_(1.0)  # training the adapter is fine
    check.on_train_end(args, state, control)
    with torch.no_grad():
        policy.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight[0, 0] += 1.0
    with pytest.raises(FrozenModelError, match=r"layers\.0\.self_attn\.q_proj\.base_layer\.weight"):
        check.on_train_end(args, state, control)
