"""Sampling with token ids, sequence log-probabilities against a hand computation, and the Monte-Carlo KL."""

import numpy as np
import pytest
import torch

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.models.sampling import generate, load_for_sampling, sequence_kl, sequence_logprobs
from rlhfkit.models.scoring import sample_responses


@pytest.fixture(scope="module")
def policy(nano_model):
    return load_for_sampling(nano_model)


def _hand_logprob(model, prompt_ids, response_ids, temperature=1.0) -> float:
    """log p(response | prompt), one token at a time from an unpadded forward pass."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    total = 0.0
    for t, token in enumerate(response_ids):
        pos = len(prompt_ids) + t - 1  # the logits at pos predict the token at pos + 1
        total += torch.log_softmax(logits[pos] / temperature, dim=-1)[token].item()
    return total


def _reference_samples(model, tokenizer, prompts, max_new_tokens, seed, batch_size) -> list[str]:
    """Sampling written out with the tokenizer's own left padding and one global seed (what sampling replaced)."""
    torch.manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, top_k=0, top_p=1.0,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        out += tokenizer.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return out


def test_generate_samples_as_written_out_and_keeps_ids(nano_model, policy):
    model, tokenizer = policy
    prompts = lab.make_prompts(10, seed=4)
    samples = generate(model, tokenizer, prompts, max_new_tokens=8, temperature=1.0, seed=3, batch_size=4)
    assert samples.texts == _reference_samples(model, tokenizer, prompts, 8, 3, 4)
    assert sample_responses(str(nano_model), prompts, 8, 3, 1.0, batch_size=4) == samples.texts
    assert samples.prompts == prompts and len(samples) == 10
    for ids, text, done in zip(samples.response_ids, samples.texts, samples.finished):
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert done == (ids[-1] == tokenizer.eos_token_id) and len(ids) <= 8
    state = torch.random.get_rng_state()
    grouped = generate(model, tokenizer, prompts[:3], max_new_tokens=8, seed=3, num_samples=4)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is untouched
    assert grouped.prompts == [p for p in prompts[:3] for _ in range(4)] and grouped.num_samples == 4


def test_a_seed_per_batch_keeps_each_batchs_random_numbers_whatever_came_before(policy):
    """``seed_each_batch``: a batch samples the same whatever the earlier batches were (how many steps they took), so
    two policies evaluated on the same prompts share their random numbers prompt by prompt (policy_eval)."""
    model, tokenizer = policy
    first, other, second = lab.make_prompts(4, seed=1), lab.make_prompts(4, seed=2), lab.make_prompts(4, seed=3)
    runs = [generate(model, tokenizer, head + second, max_new_tokens=8, seed=5, batch_size=4, seed_each_batch=True)
            for head in (first, other)]  # fmt: skip
    assert runs[0].texts[4:] == runs[1].texts[4:]
    plain = generate(model, tokenizer, first + second, max_new_tokens=8, seed=5, batch_size=4)
    assert plain.texts != runs[0].texts  # a seed per batch is another stream than one seed for all
    again = generate(model, tokenizer, first + second, max_new_tokens=8, seed=5, batch_size=4, seed_each_batch=True)
    assert again.texts == runs[0].texts  # still one seed, one set of responses


def test_temperature_0_is_greedy_and_a_tiny_nucleus_is_the_argmax(policy):
    """Greedy: the same tokens as an unpadded one-prompt ``model.generate(do_sample=False)``, whatever the seed;
    ``top_p`` so small that the nucleus is the likeliest token samples exactly that token."""
    model, tokenizer = policy
    prompts = lab.make_prompts(6, seed=7)
    greedy = generate(model, tokenizer, prompts, max_new_tokens=8, temperature=0, seed=1, batch_size=4)
    assert generate(model, tokenizer, prompts, max_new_tokens=8, temperature=0, seed=2).texts == greedy.texts
    for prompt, ids in zip(greedy.prompt_ids, greedy.response_ids):
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        single = out[0, len(prompt) :].tolist()
        assert ids == single[: len(ids)] and (len(ids) == len(single) or ids[-1] == tokenizer.eos_token_id)
    nucleus = generate(model, tokenizer, prompts, max_new_tokens=8, top_p=1e-6, seed=3, batch_size=4)
    assert nucleus.response_ids == greedy.response_ids
    sampled = generate(model, tokenizer, prompts, max_new_tokens=8, seed=3, batch_size=4)
    assert sampled.response_ids != greedy.response_ids  # top_p 1 does sample


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sequence_logprobs_equal_a_hand_computation(policy, temperature):
    model, tokenizer = policy
    prompts = lab.make_prompts(7, seed=1)
    samples = generate(model, tokenizer, prompts, max_new_tokens=10, temperature=temperature, seed=0)
    got = sequence_logprobs(model, samples.prompt_ids, samples.response_ids, temperature=temperature, batch_size=3)
    want = [_hand_logprob(model, p, r, temperature) for p, r in zip(samples.prompt_ids, samples.response_ids)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert sequence_logprobs(model, [[1, 2]], [[]])[0] == 0.0


def test_kl_is_zero_to_itself_and_matches_the_exact_kl_of_one_token(nano_model, policy, tmp_path):
    model, tokenizer = policy
    prompts = lab.make_prompts(6, seed=2)
    samples = generate(model, tokenizer, prompts, max_new_tokens=6, seed=1)
    same = sequence_kl(model, model, samples)
    assert same.mean == 0.0 and same.n == 6

    # a second model: the first with its LM head perturbed; for one-token responses the exact KL is a sum over V
    other, _ = load_for_sampling(nano_model)
    with torch.no_grad():
        other.lm_head.weight.add_(0.05 * torch.randn_like(other.lm_head.weight))
    prompt = lab.make_prompts(1, seed=5)
    many = generate(model, tokenizer, prompt, max_new_tokens=1, seed=0, num_samples=2000, batch_size=500)
    estimate = sequence_kl(model, other, many, batch_size=500)
    ids = torch.tensor([many.prompt_ids[0]])
    with torch.no_grad():
        p = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        q = torch.log_softmax(other(input_ids=ids).logits[0, -1].double(), -1)
    exact = float((p.exp() * (p - q)).sum())
    assert abs(estimate.mean - exact) < 4 * estimate.sem, (estimate, exact)


def test_bad_settings_are_one_line_errors(policy):
    model, tokenizer = policy
    with pytest.raises(ConfigError, match="temperature=-1 must be >= 0"):
        generate(model, tokenizer, ["Q: List 1 fruits.\nA:"], max_new_tokens=4, temperature=-1)
    with pytest.raises(ConfigError, match=r"top_p=0 must be in \(0, 1\]"):
        generate(model, tokenizer, ["Q: List 1 fruits.\nA:"], max_new_tokens=4, top_p=0)
    with pytest.raises(ConfigError, match="2 prompts for 1 responses"):
        sequence_logprobs(model, [[1], [2]], [[3]])
