import random

import numpy as np
import pytest
from scipy.stats import binomtest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError

P3 = lab.make_prompt("fruits", 3)


def test_prompt_round_trip():
    assert P3 == "Q: List 3 fruits.\nA:"
    assert lab.parse_prompt(P3) == ("fruits", 3)
    for p in lab.make_prompts(50, seed=1):
        cat, n = lab.parse_prompt(p)
        assert cat in lab.CATEGORIES and 1 <= n <= lab.MAX_COUNT
    with pytest.raises(ConfigError, match="not a lab prompt"):
        lab.parse_prompt("Q: write a poem")


@pytest.mark.parametrize(
    "response, expected",
    [
        (" apple, pear, plum.", 1.0),  # perfect
        (" apple, pear.", 2 / 3),  # one short
        (" apple, pear, plum, kiwi.", 1.0 - 0.3),  # one extra (right word, still too many)
        (" apple, pear, dog.", 2 / 3 - 0.5 / 3),  # one wrong category
        (" apple, apple, pear.", 2 / 3 - 0.5 / 3),  # a repeat counts as wrong
        (" apple, pear, plum", 1.0 - 0.2),  # no final period
        ("", -0.2),
        (" dog, cat, cow, horse, lion, wolf, bear.", -1.0),  # clipped
    ],
)
def test_gold_reward_by_hand(response, expected):
    assert lab.gold_reward(P3, response) == pytest.approx(expected)


def test_gold_reward_penalises_length_beyond_the_request():
    """The exploitable proxy: more items help up to n, then hurt."""
    words = list(lab.CATEGORIES["fruits"])
    golds = [lab.gold_reward(P3, " " + ", ".join(words[:k]) + ".") for k in range(1, 8)]
    assert np.argmax(golds) == 2  # best at exactly 3 items
    assert all(np.diff(golds[:3]) > 0) and all(np.diff(golds[2:]) < 0)


def test_demonstrations_are_mixed_with_room_to_improve():
    demos = lab.demonstrations(2000, seed=0)
    gold = lab.gold_rewards([d["prompt"] for d in demos], [d["completion"] for d in demos])
    assert gold.max() == 1.0
    assert 0.6 < gold.mean() < 0.9  # mostly good, clearly below the best achievable 1.0
    assert (gold == 1.0).mean() == pytest.approx(0.5, abs=0.05)


def test_candidates_vary_in_quality_and_length():
    rng = random.Random(0)
    prompts = lab.make_prompts(200, seed=3)
    cands = [c for p in prompts for c in lab.candidates(p, 4, rng)]
    gold = lab.gold_rewards([p for p in prompts for _ in range(4)], cands)
    lengths = [lab.count_items(c) for c in cands]
    assert gold.std() > 0.3 and len(set(lengths)) >= 5


def test_determinism_under_seed(tmp_path):
    assert lab.make_prompts(20, 5) == lab.make_prompts(20, 5) != lab.make_prompts(20, 6)
    assert lab.demonstrations(20, 5) == lab.demonstrations(20, 5)
    a = lab.comparison_dataset(50, lab.LabelerPool(seed=1), seed=2)
    b = lab.comparison_dataset(50, lab.LabelerPool(seed=1), seed=2)
    assert a == b
    assert lab.ranking_dataset(5, 4, lab.LabelerPool(seed=1), 2) == lab.ranking_dataset(
        5, 4, lab.LabelerPool(seed=1), 2
    )


@pytest.mark.parametrize("noise", [0.05, 0.2, 0.35])
def test_realised_noise_matches_configured_rate(noise):
    pool = lab.LabelerPool(n_labelers=3, noise=noise, seed=7)
    rows = lab.comparison_dataset(4000, pool, seed=11)
    votes = np.array([r["votes"] for r in rows])
    ga, gb = np.array([r["gold_a"] for r in rows]), np.array([r["gold_b"] for r in rows])
    decided = ga != gb
    wrong = (votes[decided] != (ga > gb)[decided, None]).sum(axis=0)
    for k in wrong:  # each labeler's flips are Binomial(n, noise): a two-sided test at 0.1%
        assert binomtest(int(k), int(decided.sum()), noise).pvalue > 1e-3


def test_per_labeler_noise_and_length_bias():
    pool = lab.LabelerPool(n_labelers=3, noise=[0.0, 0.0, 0.0], length_bias=[0.0, 0.6, 1.0], seed=0)
    rows = lab.comparison_dataset(3000, pool, seed=1)
    votes = np.array([r["votes"] for r in rows])
    la = np.array([lab.count_items(r["response_a"]) for r in rows])
    lb = np.array([lab.count_items(r["response_b"]) for r in rows])
    diff = la != lb
    longer_rate = (votes[diff] == (la > lb)[diff, None]).mean(axis=0)
    assert longer_rate[2] == 1.0 and longer_rate[0] < longer_rate[1] < 1.0


def test_labelers_per_item_marks_unrated():
    pool = lab.LabelerPool(n_labelers=5, seed=0)
    rows = lab.comparison_dataset(300, pool, seed=0, labelers_per_item=3)
    votes = np.array([r["votes"] for r in rows])
    assert ((votes >= 0).sum(axis=1) == 3).all() and set(np.unique(votes)) == {-1, 0, 1}


def test_bad_pool_config_is_reported():
    with pytest.raises(ConfigError, match="noise"):
        lab.LabelerPool(n_labelers=2, noise=[0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="length_bias"):
        lab.LabelerPool(length_bias=1.5)


def test_rankings_follow_gold_for_noiseless_labelers():
    pool = lab.LabelerPool(n_labelers=1, noise=0.0, seed=0)
    for row in lab.ranking_dataset(30, 5, pool, seed=4):
        gold = lab.gold_rewards([row["prompt"]] * 5, row["responses"])
        for i in range(5):
            for j in range(5):
                if gold[i] > gold[j]:
                    assert row["ranking"][i] < row["ranking"][j]


def test_tiny_model_builder_saves_a_hub_like_folder(nano_model):
    assert (nano_model / "model.safetensors").exists() and (nano_model / "tokenizer.json").exists()
    tok = AutoTokenizer.from_pretrained(nano_model)
    model = AutoModelForCausalLM.from_pretrained(nano_model)
    assert tok.pad_token_id != tok.eos_token_id and tok.chat_template
    text = P3 + " apple, pear, plum."
    assert tok.convert_tokens_to_string(tok.tokenize(text)) == text
    assert len(tok(text).input_ids) <= 16  # each lab word is one token: short sequences, fast training
    assert model.config.vocab_size == len(tok) and model.config.pad_token_id == tok.pad_token_id
    with pytest.raises(ConfigError, match="lab model size"):
        lab.build_tiny_model(nano_model.parent / "x", size="huge")
