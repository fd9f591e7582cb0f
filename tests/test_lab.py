import random

import numpy as np
import pytest
from scipy.stats import binomtest
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.data.comparisons import comparison_row
from rlhfkit.data.votelog import vote_problem
from rlhfkit.data.votes import from_vote_log

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


def _comparisons(n: int, k: int, seed: int) -> list[dict]:
    """``n`` lab comparisons rows of ``k`` distinct candidates."""
    rng = random.Random(seed)
    rows = []
    for prompt in lab.make_prompts(n, seed=seed):
        responses: list[str] = []
        while len(responses) < k:
            responses += [r for r in lab.candidates(prompt, 1, rng) if r not in responses]
        rows.append(comparison_row(prompt, responses))
    return rows


def test_answer_votes_against_gold_at_each_labelers_noise_rate():
    noise = [0.05, 0.2, 0.35]
    rows = _comparisons(1500, 2, seed=3)
    votes = lab.LabelerPool(n_labelers=3, noise=noise, seed=0).answer(rows, seed=5)
    assert len(votes) == 3 * 1500 and all(vote_problem(v) is None for v in votes)
    assert {v["labeler"] for v in votes} == {"lab:0", "lab:1", "lab:2"}
    assert {tuple(v["pair"]) for v in votes} == {(0, 1)}
    for j, rate in enumerate(noise):
        decided = [v for v in votes if v["labeler"] == f"lab:{j}"]
        gold = [lab.gold_rewards([v["prompt"]] * 2, v["responses"]) for v in decided]
        against = [(v["label"] == "a") != (g[0] > g[1]) for v, g in zip(decided, gold) if g[0] != g[1]]
        # each labeler's flips are Binomial(n, noise): a two-sided test at 0.1%
        assert binomtest(sum(against), len(against), rate).pvalue > 1e-3
        left = [v["shown_order"][0] == (0 if v["label"] == "a" else 1) for v in decided]
        assert binomtest(sum(left), len(left), 0.5).pvalue > 1e-3  # no position effect by default


def test_answer_pairs_of_k_responses_with_position_bias_and_labelers_per_item():
    rows = _comparisons(400, 3, seed=1)
    pool = lab.LabelerPool(n_labelers=4, noise=0.0, position_bias=[0.0, 0.0, 0.6, 0.6], seed=0)
    votes = pool.answer(rows, labelers_per_item=2, seed=2)
    assert len(votes) == 400 * 3 * 2 and all(vote_problem(v) is None for v in votes)
    per_pair = {}
    for v in votes:
        per_pair.setdefault((v["item_id"], tuple(v["pair"])), []).append(v["labeler"])
        assert sorted(v["shown_order"]) == v["pair"]
    assert len(per_pair) == 400 * 3 and {len(set(names)) for names in per_pair.values()} == {2}
    for names, expected in ((("lab:0", "lab:1"), 0.5), (("lab:2", "lab:3"), 0.6 + 0.4 * 0.5)):
        chosen = [v for v in votes if v["labeler"] in names]
        left = sum(v["shown_order"][0] == v["pair"][0 if v["label"] == "a" else 1] for v in chosen)
        assert binomtest(left, len(chosen), expected).pvalue > 1e-3
    again = pool.answer(rows, labelers_per_item=2, seed=2)
    assert [(v["labeler"], v["label"], v["shown_order"]) for v in again] == [
        (v["labeler"], v["label"], v["shown_order"]) for v in votes
    ]


def test_answer_rankings_follow_gold_for_noiseless_labelers_with_ties_grouped():
    prompt = lab.make_prompt("fruits", 2)
    rows = [comparison_row(prompt, [" apple, pear.", " pear, apple.", " apple.", " dog, cat, cow."])]
    rows += _comparisons(20, 4, seed=2)
    votes = lab.LabelerPool(n_labelers=2, noise=0.0, seed=0).answer(rows, mode="ranking", seed=1)
    assert len(votes) == 2 * 21 and all(vote_problem(v) is None for v in votes)
    by_length = lab.LabelerPool(n_labelers=1, noise=0.0, length_bias=1.0).answer(rows[:1], mode="ranking")
    assert by_length[0]["ranking"] == [[3], [0, 1], [2]]  # same length and gold: one tied group
    for v in votes:
        gold = lab.gold_rewards([v["prompt"]] * 4, v["responses"])
        order = [g for group in v["ranking"] for g in [gold[group[0]]] * len(group)]
        assert order == sorted(order, reverse=True) and sorted(v["shown_order"]) == [0, 1, 2, 3]
    one_each = lab.LabelerPool(n_labelers=5, seed=0).answer(rows, mode="ranking", labelers_per_item=1, seed=1)
    assert len(one_each) == 21
    with pytest.raises(ConfigError, match=r"labelers_per_item=6 must be in 1..5"):
        lab.LabelerPool(n_labelers=5).answer(rows, labelers_per_item=6)
    with pytest.raises(ConfigError, match=r"comparisons row 1 responses must be a list of at least 2"):
        lab.LabelerPool().answer([{"item_id": "x", "prompt": prompt, "responses": ["a"]}])


def test_answer_votes_go_through_agreement_filtering_and_flag_the_near_random_labeler():
    votes = lab.LabelerPool(noise=lab.DEFAULT_NOISE, seed=0).answer(_comparisons(1000, 2, seed=0), seed=1)
    data = from_vote_log(votes, drop_unreliable=True)
    report = data.agreement.report
    # agreement with the others' majority: about 0.54 for noise 0.45 (SE 0.016 over 1000 items) against the 0.6 line
    assert report.labelers.flagged.tolist() == [False, False, False, False, True]
    assert report.labeler_names[4] == "lab:4" and 800 < len(data) < 1000
