"""rlhfkit.rl.ppo end to end on CPU: a tiny random Llama, a word-level tokenizer and a rule-based reward.

The reward is the fraction of response words in GOOD (3 of 35 vocabulary entries), so a random policy starts
near 0.1 and the maximum is 1.0.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from rlhfkit.core.errors import ConfigError
from rlhfkit.rl.ppo.config import PPOConfig
from rlhfkit.rl.ppo.layouts import SharedBase, build_shared_base, use_adapter
from rlhfkit.rl.ppo.trainer import PPOTrainer

REPO = Path(__file__).resolve().parents[3]
WORDS = ["<eos>", "<pad>"] + [f"w{i}" for i in range(30)] + ["Q:", "say", "A:"]
GOOD = {"w1", "w2", "w3"}
PROMPTS = [f"Q: say w{i % 30} A:" for i in range(64)]
TRL_METRICS = (
    "objective/kl",
    "objective/entropy",
    "objective/non_score_reward",
    "objective/rlhf_reward",
    "objective/scores",
    "policy/approxkl_avg",
    "policy/clipfrac_avg",
    "loss/policy_avg",
    "loss/value_avg",
    "val/clipfrac_avg",
    "policy/entropy_avg",
    "val/ratio",
    "val/ratio_var",
    "val/num_eos_tokens",
    "lr",
    "episode",
    "objective/kl_coef",
    "completions/mean_length",
)


# ----------------------------------------------------------------------------------------- tiny models
def make_tokenizer(pad: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", pad_token="<pad>" if pad else "<eos>")


def llama_config(num_labels: int = 1):
    from transformers import LlamaConfig

    # hidden 64: bitsandbytes' CPU 4-bit kernel needs in_features >= 64. initializer_range 0.1 (not 0.02): with
    # near-zero embeddings a LoRA-only policy cannot move the logits far enough to reach the maximum reward.
    return LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
        tie_word_embeddings=True,
        initializer_range=0.1,
        num_labels=num_labels,
    )


def make_policy(seed: int = 0):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config())


def make_classifier(policy):
    """A one-label classifier sharing the policy's body (how a value model starts from the SFT model)."""
    from transformers import LlamaForSequenceClassification

    clf = LlamaForSequenceClassification(llama_config())
    clf.model.load_state_dict(policy.model.state_dict())
    return clf


def lora_config(task_type: str = "CAUSAL_LM", **kw):
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type=task_type, **kw)


def rule_reward(prompts, completions, **kwargs):
    return [sum(w in GOOD for w in c.split()) / len(c.split()) if c.split() else 0.0 for c in completions]


def ppo_args(tmp_path, **overrides) -> PPOConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=4,
        num_mini_batches=2,
        total_episodes=32 * 4,
        response_length=6,
        temperature=1.0,
        learning_rate=3e-3,
        kl_coef=0.01,
        stop_token="eos",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        num_sample_generations=0,
    )
    kwargs.update(overrides)
    return PPOConfig(**kwargs)


def separate_trainer(tmp_path, reward=rule_reward, seed=0, **overrides) -> PPOTrainer:
    policy = make_policy(seed)
    ref = copy.deepcopy(policy).requires_grad_(False)
    return PPOTrainer(
        ppo_args(tmp_path, **overrides), make_tokenizer(), policy, ref, reward, PROMPTS, make_classifier(policy)
    )


def shared_trainer(tmp_path, seed=0, **overrides) -> PPOTrainer:
    shared = build_shared_base(make_policy(seed), lora_config())
    overrides.setdefault("learning_rate", 1e-2)  # LoRA: ~10x the full fine-tuning rate
    return PPOTrainer(
        ppo_args(tmp_path, **overrides), make_tokenizer(), shared, reward_model=rule_reward, train_dataset=PROMPTS
    )


def history(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


# ----------------------------------------------------------------------------------------- config
def test_config_defaults_follow_trl_and_never_bf16_on_cpu(tmp_path, cpu_only):
    from dataclasses import fields

    args = PPOConfig(output_dir=str(tmp_path))
    assert not args.bf16 and not args.fp16 and args.use_cpu  # precision from the hardware
    assert (args.learning_rate, args.kl_coef, args.cliprange, args.vf_coef, args.gamma, args.lam) == (
        3e-6,
        0.05,
        0.2,
        0.1,
        1.0,
        0.95,
    )
    assert (args.num_ppo_epochs, args.response_length, args.temperature, args.kl_estimator) == (4, 53, 0.7, "k1")
    doc = PPOConfig.__doc__
    own = [f for f in fields(PPOConfig) if f.name in PPOConfig.__annotations__]
    for f in own:
        assert f.metadata.get("help"), f.name
        assert f.name in doc, f"{f.name} is not documented in the PPOConfig docstring"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stop_token="eos", stop_token_id=3), "stop_token_id"),
        (dict(reward_mean=0.5), "reward_std"),
        (dict(reward_mean=0.5, reward_std=0.0), "reward_std"),
        (dict(gradient_accumulation_steps=3, num_mini_batches=2), "num_mini_batches"),
        (dict(target_kl=-1.0), "target_kl"),
    ],
)
def test_config_errors_name_the_field(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PPOConfig(output_dir=str(tmp_path), **kwargs)


# ----------------------------------------------------------------------------------------- refusals
def test_refuses_pad_equal_to_eos(tmp_path):
    policy = make_policy()
    ref = copy.deepcopy(policy).requires_grad_(False)
    with pytest.raises(ConfigError, match="prepare_tokenizer"):
        PPOTrainer(
            ppo_args(tmp_path), make_tokenizer(pad=False), policy, ref, rule_reward, PROMPTS, make_classifier(policy)
        )


def test_refuses_trainable_reference_and_reward_model(tmp_path):
    policy = make_policy()
    with pytest.raises(ConfigError, match="ref_model .*frozen"):
        PPOTrainer(
            ppo_args(tmp_path),
            make_tokenizer(),
            policy,
            copy.deepcopy(policy),
            rule_reward,
            PROMPTS,
            make_classifier(policy),
        )
    ref = copy.deepcopy(policy).requires_grad_(False)
    with pytest.raises(ConfigError, match="reward_model .*frozen"):
        PPOTrainer(ppo_args(tmp_path), make_tokenizer(), policy, ref, make_classifier(policy), PROMPTS)
    shared = build_shared_base(make_policy(), lora_config())
    shared.model.get_base_model().model.embed_tokens.weight.requires_grad_(True)
    with pytest.raises(ConfigError, match="embed_tokens"):
        PPOTrainer(ppo_args(tmp_path), make_tokenizer(), shared, reward_model=rule_reward, train_dataset=PROMPTS)


# ----------------------------------------------------------------------------------------- adapters
def _grad_flags(model) -> dict[str, bool]:
    return {n: p.requires_grad for n, p in model.named_parameters()}


def test_use_adapter_restores_active_adapter_and_requires_grad_exactly():
    shared = build_shared_base(make_policy(), lora_config())
    peft_model = shared.model
    peft_model.add_adapter("other", lora_config())
    peft_model.set_adapter(shared.policy_adapter)
    # re-freeze what add_adapter/set_adapter touched: policy + value trainable, "other" frozen
    for n, p in peft_model.named_parameters():
        p.requires_grad_(("lora_" in n) and (".default." in n or ".value." in n))
    before = _grad_flags(peft_model)
    x = torch.randint(2, 30, (2, 5))
    base_logits = shared.model.get_base_model()(x).logits  # LoRA B = 0: adapters are a no-op so far
    for name in ("value", "other", None):
        with use_adapter(peft_model, name):
            assert _grad_flags(peft_model) == before  # switching never changes what trains
            if name is not None:
                assert peft_model.active_adapter == name
            else:
                assert torch.allclose(peft_model(x).logits, base_logits)
        assert peft_model.active_adapter == shared.policy_adapter
        assert _grad_flags(peft_model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with use_adapter(peft_model, "other"):
            raise RuntimeError("boom")
    assert peft_model.active_adapter == shared.policy_adapter and _grad_flags(peft_model) == before
    # without the context manager peft's set_adapter does change requires_grad: the reason it exists
    peft_model.set_adapter("other")
    assert _grad_flags(peft_model) != before


def test_shared_base_reward_adapter_scores_like_the_separate_reward_model(tmp_path):
    from peft import get_peft_model

    from rlhfkit.rl.ppo.layouts import per_token_scores

    policy = make_policy()
    torch.manual_seed(1)
    rm = get_peft_model(make_classifier(policy), lora_config("SEQ_CLS", modules_to_save=["score"]))
    with torch.no_grad():
        for n, p in rm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.normal_(0, 0.2)  # a "trained" reward adapter and head
    rm.save_pretrained(tmp_path / "rm_adapter")
    shared = build_shared_base(copy.deepcopy(policy), lora_config(), reward_adapter=tmp_path / "rm_adapter")
    x = torch.randint(2, 30, (3, 7))
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x), "position_ids": torch.arange(7).expand(3, 7)}
    inner = rm.get_base_model()
    expected = per_token_scores(inner.model, inner.score, **inputs)
    assert torch.allclose(shared.rewards(**inputs), expected, atol=1e-5)
    assert torch.allclose(shared.values(**inputs), expected, atol=1e-5)  # value initialised from the reward model
    trainable = {n for n, p in shared.named_parameters() if p.requires_grad}
    assert trainable and all(
        n == "value_head.weight" or ("lora_" in n and (".default." in n or ".value." in n)) for n in trainable
    )
    assert not any(p.requires_grad for p in shared.reward_head.parameters())


def _saved_reward_adapter(policy, folder, seed):
    from peft import get_peft_model

    torch.manual_seed(seed)
    rm = get_peft_model(make_classifier(policy), lora_config("SEQ_CLS", modules_to_save=["score"]))
    with torch.no_grad():
        for n, p in rm.named_parameters():
            if "lora_B" in n or "modules_to_save" in n:
                p.normal_(0, 0.2)  # a "trained" reward adapter and head
    rm.save_pretrained(folder)
    return rm


def test_shared_base_reward_ensemble_aggregates_its_members_standardised(tmp_path):
    from rlhfkit.models.scoring import aggregate_rewards
    from rlhfkit.rl.ppo.layouts import per_token_scores

    policy = make_policy()
    members = [_saved_reward_adapter(policy, tmp_path / f"m{k}", seed=k + 1) for k in range(3)]
    stats = [(0.1, 0.5), (-0.2, 2.0), (0.0, 1.0)]
    adapters = [tmp_path / f"m{k}" for k in range(3)]
    shared = build_shared_base(copy.deepcopy(policy), lora_config(), reward_adapter=adapters, reward_stats=stats,
                               aggregation="mean_minus_std", coef=0.5)  # fmt: skip
    assert shared.reward_adapters == ["reward_0", "reward_1", "reward_2"] and len(shared.reward_heads) == 3
    x = torch.randint(2, 30, (3, 7))
    inputs = {"input_ids": x, "attention_mask": torch.ones_like(x), "position_ids": torch.arange(7).expand(3, 7)}
    alone = [per_token_scores(m.get_base_model().model, m.get_base_model().score, **inputs) for m in members]
    z = torch.stack([(s - mean) / std for s, (mean, std) in zip(alone, stats)])  # by hand: (K, B, L)
    expected = z.mean(0) - 0.5 * z.std(0, correction=0)
    assert torch.allclose(shared.rewards(**inputs), expected, atol=1e-5)
    assert torch.allclose(shared.last_member_scores, z, atol=1e-5)
    assert torch.allclose(aggregate_rewards(z.flatten(1), "mean_minus_std", 0.5).view_as(expected), expected)
    assert torch.allclose(shared.values(**inputs), alone[0], atol=1e-5)  # value starts from member 0
    trainable = {n for n, p in shared.named_parameters() if p.requires_grad}
    assert all(n == "value_head.weight" or ".default." in n or ".value." in n for n in trainable)
    trainer = PPOTrainer(ppo_args(tmp_path, total_episodes=32, learning_rate=1e-2), make_tokenizer(), shared,
                         train_dataset=PROMPTS)  # fmt: skip
    trainer.train()
    spread = history(trainer, "rewards/ensemble_std/mean")
    assert len(spread) == 1 and spread[0] > 0  # the members' spread, logged every update
    with pytest.raises(ConfigError, match="needs reward_stats"):
        build_shared_base(copy.deepcopy(policy), lora_config(), reward_adapter=[tmp_path / "m0", tmp_path / "m1"])


# ----------------------------------------------------------------------------------------- rollout invariants
def test_zero_learning_rate_gives_ratio_one_zero_kl_and_the_configured_scores(tmp_path):
    trainer = separate_trainer(
        tmp_path,
        reward=lambda prompts, completions, **kw: [1.0] * len(completions),
        learning_rate=0.0,
        total_episodes=64,
        reward_mean=0.5,
        reward_std=2.0,
        missing_eos_penalty=1.0,
    )
    before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    trainer.train()
    for h in trainer.state.log_history[:2]:
        assert h["val/ratio"] == pytest.approx(1.0, abs=1e-5)  # log-probs recomputed exactly as in the rollout
        assert h["policy/clipfrac_avg"] == 0.0 and h["policy/approxkl_avg"] < 1e-10
        assert h["objective/kl"] == 0.0  # policy == reference
        with_eos = h["val/num_eos_tokens"] / 32  # at most one EOS per truncated response
        assert h["objective/scores"] == pytest.approx(0.25 - 1.0 * (1 - with_eos), abs=1e-6)
        assert set(TRL_METRICS) <= set(h)
        assert 0 < h["time/generation"] < h["time/rollout"]  # the rollout samples, then scores
        assert h["time/ppo_epochs"] > 0
    assert all(torch.equal(before[k], v) for k, v in trainer.policy.state_dict().items())


def test_rollout_and_advantages_have_their_documented_shapes_and_dtypes(tmp_path):
    """Rollout / Advantages docstrings are the contract: (B, P) prompts, (B, R) per-token tensors, (B,) scores."""
    trainer = separate_trainer(tmp_path, reward_mean=0.5, reward_std=2.0, missing_eos_penalty=1.0)
    rollout = trainer._rollout([0, 1, 2, 11])
    B, P, R = 4, 4, rollout.responses.shape[1]  # every prompt is 4 words; at most response_length=6 tokens
    assert 1 <= R <= 6
    for name, shape, dtype in [
        ("queries", (B, P), torch.long),
        ("query_mask", (B, P), torch.bool),
        ("responses", (B, R), torch.long),
        ("mask", (B, R), torch.bool),
        ("logprobs", (B, R), torch.float32),
        ("ref_logprobs", (B, R), torch.float32),
        ("values", (B, R), torch.float32),
        ("raw_scores", (B,), torch.float32),
    ]:
        value = getattr(rollout, name)
        assert (tuple(value.shape), value.dtype) == (shape, dtype), name
    assert len(rollout.prompts) == len(rollout.completions) == B and rollout.prompts[3] == PROMPTS[11]
    assert rollout.completion_ids() == [r[m].tolist() for r, m in zip(rollout.responses, rollout.mask)]
    assert (rollout.responses[~rollout.mask] == 1).all()  # right-padded with the pad token
    adv = trainer._advantages(rollout)
    for name in ("kl", "non_score", "advantages", "returns"):
        value = getattr(adv, name)
        assert (tuple(value.shape), value.dtype) == ((B, R), torch.float32), name
        assert (value[~rollout.mask] == 0).all(), name
    missing_eos = ~((rollout.responses == 0) & rollout.mask).any(1)
    assert adv.scores.tolist() == pytest.approx(((rollout.raw_scores - 0.5) / 2.0 - missing_eos.float()).tolist())
    with pytest.raises(AttributeError):
        rollout.raw_score  # noqa: B018  (a misspelt field fails loudly)


# ----------------------------------------------------------------------------------------- learning
@pytest.mark.slow
@pytest.mark.parametrize("layout", ["separate", "shared"])
def test_ppo_raises_the_rule_based_reward_to_near_its_maximum(tmp_path, layout):
    make = separate_trainer if layout == "separate" else shared_trainer
    trainer = make(tmp_path, total_episodes=32 * 24, logging_steps=1)
    trainer.train()
    scores = history(trainer, "objective/scores")
    assert len(scores) == 24
    assert scores[0] < 0.3, scores  # a random policy: ~3/35 of its words are good
    assert sum(scores[-3:]) / 3 > 0.8, scores  # the maximum is 1.0


@pytest.mark.slow
def test_large_kl_coef_keeps_kl_far_smaller(tmp_path):
    kls = {}
    for coef in (0.001, 1.0):
        trainer = separate_trainer(tmp_path / str(coef), total_episodes=32 * 12, kl_coef=coef)
        trainer.train()
        kls[coef] = sum(history(trainer, "objective/kl")[-4:]) / 4
    assert kls[1.0] < 0.25 * kls[0.001], kls


# ----------------------------------------------------------------------------------------- callbacks, saving, resume
class StopAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step, self.events = step, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.append("begin")

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(("log", sorted(logs)))
        if state.global_step >= self.step:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append("end")


def test_a_callback_can_stop_training_cleanly(tmp_path):
    cb = StopAtStep(2)
    policy = make_policy()
    trainer = PPOTrainer(
        ppo_args(tmp_path, total_episodes=32 * 5),
        make_tokenizer(),
        policy,
        copy.deepcopy(policy).requires_grad_(False),
        rule_reward,
        PROMPTS,
        make_classifier(policy),
        callbacks=[cb],
    )
    out = trainer.train()
    assert out.global_step == 2 == trainer.state.global_step
    assert cb.events[0] == "begin" and cb.events[-1] == "end"
    assert set(TRL_METRICS) <= set(cb.events[1][1])


@pytest.mark.parametrize("layout", ["separate", "shared"])
def test_resume_from_a_mid_run_checkpoint_is_exact(tmp_path, layout):
    make = separate_trainer if layout == "separate" else shared_trainer
    common = dict(total_episodes=32 * 4, save_strategy="steps", save_steps=2, target_kl=0.5, kl_horizon=100)
    straight = make(tmp_path / "a", **common)
    straight.train()
    assert (tmp_path / "a/out/checkpoint-2/trainable.safetensors").exists()
    resumed = make(tmp_path / "b", **common)  # same frozen reference; trainable weights scrambled below
    with torch.no_grad():
        for p in resumed.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))  # everything trainable must come from the checkpoint
    resumed.train(resume_from_checkpoint=str(tmp_path / "a/out/checkpoint-2"))
    assert resumed.state.global_step == 4
    a = dict(straight.model.named_parameters())
    for name, p in resumed.model.named_parameters():
        assert torch.equal(p, a[name]), name
    keys = ("objective/scores", "objective/kl", "objective/kl_coef", "loss/policy_avg", "lr")
    tail = [{k: h[k] for k in keys} for h in straight.state.log_history if h.get("step", 0) > 2 and keys[0] in h]
    got = [{k: h[k] for k in keys} for h in resumed.state.log_history if h.get("step", 0) > 2 and keys[0] in h]
    assert got == tail and len(got) == 2
    assert straight.kl_ctl.value == resumed.kl_ctl.value != 0.01  # the adaptive coefficient moved and was restored


def test_save_model_writes_a_loadable_safetensors_policy(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = separate_trainer(tmp_path, total_episodes=32)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final/model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "final")
    assert torch.equal(loaded.lm_head.weight, trainer.policy.lm_head.weight)
    assert AutoTokenizer.from_pretrained(tmp_path / "final").pad_token == "<pad>"

    shared = shared_trainer(tmp_path / "s", total_episodes=32)
    shared.train()
    shared.save_model(str(tmp_path / "final_lora"))
    assert (tmp_path / "final_lora/adapter_model.safetensors").exists()
    peft_policy = PeftModel.from_pretrained(make_policy(), tmp_path / "final_lora")
    x = torch.randint(2, 30, (2, 5))
    with use_adapter(shared.shared.model, shared.shared.policy_adapter):
        assert torch.allclose(peft_policy(x).logits, shared.shared.model(x).logits, atol=1e-5)


def test_reward_model_scores_match_through_a_separate_reward_tokenizer(tmp_path):
    policy = make_policy()
    rm = make_classifier(make_policy(seed=5)).requires_grad_(False)
    prompts = [p + " " for p in PROMPTS]  # word-level tokenizer: prompt + completion text needs the space
    ref = copy.deepcopy(policy).requires_grad_(False)
    trainer = PPOTrainer(ppo_args(tmp_path, total_episodes=32), make_tokenizer(), policy, ref, rm, prompts)
    value = trainer.model.value_model  # defaults to a trainable copy of the reward model (InstructGPT)
    assert value is not rm and all(p.requires_grad for p in value.parameters())
    batch = trainer._rollout(list(range(8)))
    trainer.reward_processing_class = make_tokenizer()
    retokenized = trainer._external_scores(batch.prompts, batch.completions, batch.responses, batch.mask)
    assert torch.allclose(retokenized, batch.raw_scores, atol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("error:.*autograd kernel was not registered")  # backprop through repacked 4-bit weights
def test_shared_base_trains_on_a_4bit_nf4_base(tmp_path):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    make_policy().save_pretrained(tmp_path / "base")
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", quantization_config=q)
    shared = build_shared_base(base, lora_config())
    assert isinstance(shared, SharedBase)
    trainer = PPOTrainer(
        ppo_args(tmp_path, total_episodes=64, learning_rate=1e-2, activation_checkpointing=True),
        make_tokenizer(),
        shared,
        reward_model=rule_reward,
        train_dataset=PROMPTS,
    )
    before = {n: p.clone() for n, p in shared.named_parameters() if p.requires_grad}
    trainer.train()
    assert trainer.state.global_step == 2
    assert history(trainer, "objective/kl")[0] == pytest.approx(0.0, abs=1e-4)  # LoRA B = 0: policy == reference
    changed = [n for n, p in shared.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(".default." in n for n in changed) and "value_head.weight" in changed
    # bitsandbytes repacks CPU 4-bit weights for inference in eval mode; the trainer must never trigger it
    states = [m.weight.quant_state for m in base.modules() if type(m).__name__ == "Linear4bit"]
    assert states and not any(getattr(s, "packing_format_for_cpu", False) for s in states)


# ----------------------------------------------------------------------------------------- recipe and configs
def _recipe():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("ppo_recipe", REPO / "recipes" / "ppo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ppo_recipe"] = module
    spec.loader.exec_module(module)
    return module


def _types(recipe):
    from rlhfkit.monitors import MonitorConfig

    return (recipe.ModelArguments, recipe.DataArguments, recipe.PPOScriptArguments, MonitorConfig, recipe.PPOConfig)


@pytest.mark.parametrize("config", ["configs/lab/ppo.yaml", "configs/qwen2.5-0.5b-instruct/ppo.yaml"])
def test_ppo_configs_parse_with_their_recipe(config, cpu_only):
    from rlhfkit.core.arguments import parse_recipe

    path = REPO / config
    assert path.read_text().startswith("# accelerate launch ") and f"--config {config}" in path.read_text()
    model, data, script, monitor, training = parse_recipe("ppo", _types(_recipe()), ["--config", str(path)])
    assert training.bf16 is False and training.stop_token == "eos"  # precision from the hardware
    assert script.reward_model_path.endswith("reward/model") and training.kl_coef > 0
    _, _, _, _, overridden = parse_recipe("ppo", _types(_recipe()), ["--config", str(path), "--kl_coef", "0.1"])
    assert overridden.kl_coef == 0.1


def _reward_stage_output(nano_model, out):
    """A reward stage's output folder: model/ (merged) and adapter/ (SEQ_CLS LoRA + score head)."""
    import shutil

    from peft import get_peft_model

    from rlhfkit.models.loading import load_reward_model

    shutil.copytree(nano_model, out / "model")
    rm, tok = load_reward_model(nano_model)
    get_peft_model(rm, lora_config("SEQ_CLS", modules_to_save=["score"])).save_pretrained(out / "adapter")
    return out / "model"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["full", "lora"])
def test_ppo_recipe_runs_on_the_lab(nano_model, tmp_path, preset):
    from rlhfkit.core.arguments import parse_recipe

    recipe = _recipe()
    reward = _reward_stage_output(nano_model, tmp_path / "reward")
    argv = ["--config", str(REPO / "configs/lab/ppo.yaml"), "--model_name_or_path", str(nano_model)]
    argv += ["--reward_model_path", str(reward), "--output_dir", str(tmp_path / "out"), "--preset", preset]
    argv += ["--total_episodes", "32", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "2"]
    argv += ["--response_length", "8", "--lab_samples", "64", "--eval_prompts", "8", "--save_steps", "1"]
    args = parse_recipe("ppo", _types(recipe), argv)
    summary = recipe.main(*args)
    assert (tmp_path / "out/model/model.safetensors").exists() and {"gold_sft", "gold_ppo"} <= set(summary)
    assert (tmp_path / "out/adapter/adapter_model.safetensors").exists() == (preset == "lora")
    assert (tmp_path / "out/checkpoint-2/trainable.safetensors").exists()


def test_load_ppo_models_picks_the_layout_from_the_preset(nano_model, tmp_path):
    from rlhfkit.rl.ppo.layouts import load_ppo_models

    reward = _reward_stage_output(nano_model, tmp_path / "reward")
    separate = load_ppo_models(nano_model, reward, preset="full")
    assert not isinstance(separate["model"], SharedBase)
    assert not any(p.requires_grad for m in ("ref_model", "reward_model") for p in separate[m].parameters())
    assert all(p.requires_grad for p in separate["value_model"].parameters())
    shared = load_ppo_models(nano_model, reward, preset="lora")
    assert isinstance(shared["model"], SharedBase) and shared["model"].reward_adapter == "reward"
    assert shared["reward_model"] is None and shared["ref_model"] is None
    with pytest.raises(ConfigError, match="layout=shared"):
        load_ppo_models(nano_model, reward, preset="full", layout="shared")


def test_activation_checkpointing_does_not_change_the_shared_base_update(tmp_path):
    """Checkpointing recomputes the forward during backward: the right adapter must be active then too."""
    weights = []
    for ckpt in (False, True):
        trainer = shared_trainer(tmp_path / str(ckpt), total_episodes=32, activation_checkpointing=ckpt)
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
    for name, p in weights[0].items():
        assert torch.allclose(p, weights[1][name], atol=1e-6), name


# ----------------------------------------------------------------------------------------- logging
def test_metric_funcs_are_logged_but_not_optimised(tmp_path):
    """A metric function (the lab's gold reward, say) is logged per update; the update itself does not change."""
    calls = []

    def good_share(prompts, completions, completion_ids, **kw):
        calls.append(len(completions))
        return rule_reward(prompts, completions)

    plain = separate_trainer(tmp_path / "plain", total_episodes=64)
    plain.train()
    logged = separate_trainer(tmp_path / "logged", total_episodes=64)
    logged.metric_funcs = [good_share]
    logged.train()
    assert calls == [32, 32]  # every update, on its own rollout
    # the rule reward is also the optimised reward here: the logged metric is the mean score of the same samples
    assert history(logged, "rewards/good_share/mean") == pytest.approx(history(logged, "objective/scores"))
    for a, b in zip(plain.model.parameters(), logged.model.parameters()):
        assert torch.equal(a, b)


def test_report_to_tensorboard_writes_every_update(tmp_path):
    """report_to works as for any transformers Trainer: TRL's metric names land in TensorBoard, a point per update."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = separate_trainer(tmp_path, total_episodes=96, report_to=["tensorboard"])
    trainer.train()
    runs = list((tmp_path / "out" / "runs").iterdir())  # transformers 5: output_dir/runs/<date>_<host>
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0])).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/objective/kl", "train/objective/scores", "train/policy/clipfrac_avg"} <= tags
    points = events.Scalars("train/objective/kl")
    assert [p.step for p in points] == [1, 2, 3]
    assert [p.value for p in points] == pytest.approx(history(trainer, "objective/kl"), rel=1e-5)


def test_parameter_sharding_is_refused_with_the_launch_fix(tmp_path):
    """FSDP / ZeRO-3 would need the sharded policy gathered every rollout: refused, naming the configs that work."""
    trainer = separate_trainer(tmp_path)
    trainer._check_no_parameter_sharding()  # plain (single-process) run: fine
    trainer.is_fsdp_enabled = True
    with pytest.raises(ConfigError, match=r"does not support FSDP: .*configs/accelerate/multi_gpu.yaml or zero2.yaml"):
        trainer._check_no_parameter_sharding()
    from rlhfkit.rl.ppo.trainer import refuse_parameter_sharding

    refuse_parameter_sharding(False, 2)  # ZeRO-2 keeps whole parameters on each GPU
    with pytest.raises(ConfigError, match="does not support DeepSpeed ZeRO-3"):
        refuse_parameter_sharding(False, 3)


def test_chat_prompts_are_scored_where_the_reward_model_was_trained(tmp_path):
    """A chat template that continues after EOS (Qwen: "<|im_end|>\\n"): RewardTrainer trains the score at the last
    template token, so PPO appends that suffix to finished answers before reading the reward model's score."""
    from datasets import Dataset

    tok = make_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q: ' + m['content'] + ' A:' }}"
        "{% else %}{{ ' ' + m['content'] + ' <eos> say' }}{% endif %}{% endfor %}"
    )  # 'say' after every answer's EOS, like Qwen's newline
    policy = make_policy()
    rm = make_classifier(make_policy(seed=1)).requires_grad_(False)
    chat = [{"prompt": [{"role": "user", "content": f"say w{i % 30}"}]} for i in range(64)]
    args = ppo_args(tmp_path, response_length=4, stop_token="eos")
    trainer = PPOTrainer(args, tok, policy, copy.deepcopy(policy).requires_grad_(False), rm, Dataset.from_list(chat))
    assert trainer.score_suffix == tok.convert_tokens_to_ids(["say"])
    batch = trainer._rollout(list(range(32)))
    lengths = batch.mask.sum(1)
    ended = [int(r[n - 1]) == tok.eos_token_id for r, n in zip(batch.responses, lengths.tolist())]
    assert any(ended) and not all(ended)  # both cases are exercised
    for i in range(32):
        answer = batch.responses[i, : lengths[i]].tolist()
        if ended[i]:  # as RewardTrainer tokenizes the conversation: the template's tokens after EOS included
            messages = chat[i]["prompt"] + [{"role": "assistant", "content": tok.decode(answer[:-1])}]
            ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            assert ids == trainer.prompt_ids[i] + answer + trainer.score_suffix
        else:  # cut off: scored where it stops
            ids = trainer.prompt_ids[i] + answer
        with torch.no_grad():  # the score head at the last token (the random policy may emit pad tokens mid-answer)
            expected = rm.score(rm.model(input_ids=torch.tensor([ids])).last_hidden_state)[0, -1, 0]
        assert batch.raw_scores[i] == pytest.approx(expected.item(), abs=1e-5), (i, ended[i], answer)
