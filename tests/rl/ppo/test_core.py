"""PPO math: every function in rlhfkit.rl.ppo.core against a plain-Python reference on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from rlhfkit.rl.ppo import core

# Two right-padded rows: lengths 4 and 2 out of T = 5.
MASK = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)


def _valid(values: torch.Tensor, mask: torch.Tensor = MASK) -> list[float]:
    return [float(v) for v, m in zip(values.flatten(), mask.flatten()) if m]


def _rand(*shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# ----------------------------------------------------------------------------------------- masked statistics
def test_masked_mean_and_var_match_python():
    x = _rand(2, 5)
    vals = _valid(x)
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    assert core.masked_mean(x, MASK).item() == pytest.approx(mean, abs=1e-12)
    assert core.masked_var(x, MASK).item() == pytest.approx(var, abs=1e-12)
    assert core.masked_var(x, MASK, unbiased=False).item() == pytest.approx(var * (len(vals) - 1) / len(vals))
    row_means = core.masked_mean(x, MASK, dim=1)
    assert row_means[1].item() == pytest.approx((x[1, 0] + x[1, 1]).item() / 2)


def test_masked_var_refuses_a_single_value():
    with pytest.raises(ValueError, match="at least 2"):
        core.masked_var(torch.ones(1, 3), torch.tensor([[1, 0, 0]]))


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_is_standard_over_valid_tokens_and_zero_on_padding(shift_mean):
    x = _rand(2, 5, seed=1) * 3 + 2
    x[~MASK] = 1e6  # whatever sits in padding must not leak into the statistics
    w = core.masked_whiten(x, MASK, shift_mean=shift_mean)
    vals = _valid(w)
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    orig_mean = sum(_valid(x)) / len(vals)
    assert mean == pytest.approx(0.0 if shift_mean else orig_mean, abs=1e-9)
    assert var == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[~MASK] == 0)


# ----------------------------------------------------------------------------------------- log-probs, entropy
def test_logprobs_and_entropy_match_naive_softmax():
    logits = _rand(2, 5, 7, seed=2)
    tokens = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(0))
    lp = core.logprobs_from_logits(logits, tokens)
    for b in range(2):
        for t in range(5):
            row = [float(v) for v in logits[b, t]]
            z = math.log(sum(math.exp(v) for v in row))
            assert lp[b, t].item() == pytest.approx(row[int(tokens[b, t])] - z, abs=1e-10)
            probs = [math.exp(v - z) for v in row]
            ent = -sum(p * math.log(p) for p in probs)
            assert core.entropy_from_logits(logits)[b, t].item() == pytest.approx(ent, abs=1e-10)


# ----------------------------------------------------------------------------------------- stop token, EOS
def test_truncate_at_stop_token_pads_everything_after_the_first_stop():
    EOS, PAD = 2, 0
    responses = torch.tensor([[5, 2, 7, 2, 9], [5, 6, 7, 8, 9], [2, 5, 5, 5, 5]])
    out, mask = core.truncate_at_stop_token(responses, EOS, PAD)
    assert out.tolist() == [[5, 2, 0, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    same, all_real = core.truncate_at_stop_token(responses, None, PAD)
    assert torch.equal(same, responses) and bool(all_real.all())


def test_missing_eos_penalty_hits_only_responses_without_eos():
    EOS = 2
    responses = torch.tensor([[5, 2, 0], [5, 6, 7], [5, 6, 2]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]])  # row 3's EOS lies in padding: it does not count
    scores = torch.tensor([1.0, 1.0, 1.0])
    assert core.apply_missing_eos_penalty(scores, responses, mask, EOS, 0.5).tolist() == [1.0, 0.5, 0.5]
    assert core.apply_missing_eos_penalty(scores, responses, mask, EOS, None) is scores


# ----------------------------------------------------------------------------------------- KL, rewards
def test_per_token_kl_estimators_match_formulas():
    logp, ref = _rand(2, 5, seed=3), _rand(2, 5, seed=4)
    k1 = core.per_token_kl(logp, ref, MASK, "k1")
    k3 = core.per_token_kl(logp, ref, MASK, "k3")
    for b in range(2):
        for t in range(5):
            if MASK[b, t]:
                log_r = (ref[b, t] - logp[b, t]).item()
                assert k1[b, t].item() == pytest.approx(-log_r, abs=1e-12)
                assert k3[b, t].item() == pytest.approx(math.exp(log_r) - 1 - log_r, abs=1e-12)
            else:
                assert k1[b, t] == 0 and k3[b, t] == 0
    with pytest.raises(ValueError, match="kl_estimator"):
        core.per_token_kl(logp, ref, MASK, "k2")


def test_kl_is_zero_when_policy_equals_reference_and_k3_never_negative():
    logp = _rand(2, 5, seed=5)
    for est in ("k1", "k3"):
        assert torch.all(core.per_token_kl(logp, logp.clone(), MASK, est) == 0)
    # k3 >= 0 everywhere, including tiny float32 differences where exp(x) - 1 - x would round below 0.
    a = torch.randn(10_000, dtype=torch.float32)
    b = a + torch.randn(10_000) * 1e-7
    assert torch.all(core.per_token_kl(a[None], b[None], torch.ones(1, 10_000), "k3") >= 0)
    big = core.per_token_kl(_rand(64, 5, seed=6) * 5, _rand(64, 5, seed=7) * 5, torch.ones(64, 5), "k3")
    assert torch.all(big >= 0)


def test_shape_rewards_puts_the_score_on_the_last_real_token():
    kl = _rand(2, 5, seed=8)
    scores = torch.tensor([3.0, -1.0], dtype=torch.float64)
    rewards, non_score = core.shape_rewards(scores, kl, MASK, kl_coef=0.1)
    for b, length in enumerate((4, 2)):
        for t in range(5):
            expected_ns = -0.1 * kl[b, t].item() if t < length else 0.0
            expected = expected_ns + (scores[b].item() if t == length - 1 else 0.0)
            assert non_score[b, t].item() == pytest.approx(expected_ns, abs=1e-12)
            assert rewards[b, t].item() == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------------------- GAE
def _gae_reference(rewards: list[float], values: list[float], gamma: float, lam: float):
    """Textbook GAE for one episode (V after the last step = 0)."""
    n = len(rewards)
    adv, last = [0.0] * n, 0.0
    for t in reversed(range(n)):
        next_v = values[t + 1] if t + 1 < n else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv, [a + v for a, v in zip(adv, values)]


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_equals_textbook_recursion_row_by_row_and_zero_on_padding(gamma, lam):
    rewards, values = _rand(2, 5, seed=9), _rand(2, 5, seed=10)
    rewards[~MASK], values[~MASK] = 7.0, 7.0  # garbage in padding must not leak
    adv, ret = core.compute_gae(rewards, values, MASK, gamma, lam)
    for b, length in enumerate((4, 2)):
        ref_adv, ref_ret = _gae_reference(rewards[b, :length].tolist(), values[b, :length].tolist(), gamma, lam)
        assert adv[b, :length].tolist() == pytest.approx(ref_adv, abs=1e-12)
        assert ret[b, :length].tolist() == pytest.approx(ref_ret, abs=1e-12)
    assert torch.all(adv[~MASK] == 0) and torch.all(ret[~MASK] == 0)


def test_gae_with_gamma_lambda_one_returns_reward_to_go():
    rewards, values = _rand(2, 5, seed=11), _rand(2, 5, seed=12)
    _, ret = core.compute_gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    for b, length in enumerate((4, 2)):
        for t in range(length):
            assert ret[b, t].item() == pytest.approx(sum(rewards[b, t:length].tolist()), abs=1e-12)


# ----------------------------------------------------------------------------------------- losses
def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    logp = _rand(2, 5, seed=13)
    adv = _rand(2, 5, seed=14)
    loss, clipfrac, approxkl = core.clipped_policy_loss(logp, logp.clone(), adv, MASK, cliprange=0.2)
    assert loss.item() == pytest.approx(-sum(_valid(adv)) / 6, abs=1e-12)
    assert clipfrac.item() == 0.0 and approxkl.item() == 0.0


def test_policy_loss_matches_python_and_gradient_is_zero_outside_trust_region():
    old = torch.zeros(1, 4, dtype=torch.float64)
    # ratios: 1.5 (A>0: clipped), 0.5 (A<0: clipped), 1.1 (inside), 0.5 (A>0: pessimistic branch, not clipped)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 2.0, 1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4)
    loss, clipfrac, approxkl = core.clipped_policy_loss(logp, old, adv, mask, cliprange=0.2)
    ref = []
    for r, a in zip([1.5, 0.5, 1.1, 0.5], adv[0].tolist()):
        ref.append(max(-a * r, -a * min(max(r, 0.8), 1.2)))
    assert loss.item() == pytest.approx(sum(ref) / 4, abs=1e-12)
    assert clipfrac.item() == pytest.approx(2 / 4)
    assert approxkl.item() == pytest.approx(0.5 * sum(math.log(r) ** 2 for r in [1.5, 0.5, 1.1, 0.5]) / 4)
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[0, 1].item() == 0.0  # exactly zero outside the region
    assert logp.grad[0, 2].item() == pytest.approx(-2.0 * 1.1 / 4)
    assert logp.grad[0, 3].item() == pytest.approx(-1.0 * 0.5 / 4)


def test_policy_loss_ignores_padding():
    logp = torch.zeros(2, 5, dtype=torch.float64)
    old = torch.zeros(2, 5, dtype=torch.float64)
    old[~MASK] = 5.0  # huge ratio in padding
    adv = torch.ones(2, 5, dtype=torch.float64)
    loss, clipfrac, approxkl = core.clipped_policy_loss(logp, old, adv, MASK, cliprange=0.2)
    assert loss.item() == pytest.approx(-1.0) and clipfrac.item() == 0 and approxkl.item() == 0


def test_value_loss_matches_python_with_clipping():
    v = torch.tensor([[0.0, 1.0, 2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    ret = torch.tensor([[1.0, 0.0, 3.0, 0.6]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipfrac = core.clipped_value_loss(v, old, ret, mask, cliprange_value=0.2)
    ref, clipped = [], []
    for vi, oi, ri in zip(v[0, :3].tolist(), old[0, :3].tolist(), ret[0, :3].tolist()):
        vc = oi + min(max(vi - oi, -0.2), 0.2)
        ref.append(max((vi - ri) ** 2, (vc - ri) ** 2))
        clipped.append((vc - ri) ** 2 > (vi - ri) ** 2)
    assert loss.item() == pytest.approx(0.5 * sum(ref) / 3, abs=1e-12)
    assert clipfrac.item() == pytest.approx(sum(clipped) / 3)
    loss.backward()
    assert v.grad[0, 3].item() == 0.0


# ----------------------------------------------------------------------------------------- KL controllers
def test_fixed_kl_controller_never_moves():
    ctl = core.FixedKLController(0.05)
    ctl.update(100.0, 64)
    assert ctl.value == 0.05
    other = core.FixedKLController(1.0)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.05


def test_adaptive_kl_controller_follows_ziegler_update():
    ctl = core.AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(9.0, 1000)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 1000 / 10_000))
    v = ctl.value
    ctl.update(5.4, 1000)  # error -0.1
    assert ctl.value == pytest.approx(v * (1 - 0.1 * 0.1))
    ctl.update(float("nan"), 1000)
    assert ctl.value == pytest.approx(v * (1 - 0.1 * 0.1))
    restored = core.AdaptiveKLController(0.5, target=6.0, horizon=10_000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    # KL far above target drives beta up, far below drives it down
    up, down = core.AdaptiveKLController(0.1, 1.0, 100), core.AdaptiveKLController(0.1, 1.0, 100)
    for _ in range(10):
        up.update(10.0, 10)
        down.update(0.0, 10)
    assert up.value > 0.1 > down.value
