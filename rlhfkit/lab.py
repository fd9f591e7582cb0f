"""The built-in lab: a synthetic instruction task with a known gold reward, simulated labelers, and a
tiny model builder, so the whole InstructGPT pipeline runs and can be checked with no GPU and no network.

The task
--------
A prompt asks for ``n`` items of one category (``n`` in 1..4)::

    "Q: List 3 fruits.\\nA:"      ->  " apple, pear, plum."

A response is a comma-separated list of items ending with a period (the EOS token follows it).

The gold reward (:func:`gold_reward`)
-------------------------------------
With ``n`` the requested count, ``C`` the category's words and ``items`` the parsed response::

    hits   = min(number of distinct items in C, n)        # what the user asked for
    wrong  = items not in C  +  repeated items            # errors
    extra  = max(0, len(items) - n)                       # more than asked for
    gold   = hits / n  -  0.5 * wrong / n  -  0.3 * extra  -  0.2 * [no final period]

clipped to [-1, 1]. The best achievable value is 1.0 (exactly ``n`` distinct right items and a
period). Length is an exploitable proxy: up to ``n`` items, longer answers are better, beyond ``n``
each extra item costs 0.3. Labelers biased towards longer answers (``LabelerPool(length_bias=...)``)
teach a reward model to like long lists, and a policy that over-optimises that reward model writes
long lists whose gold reward falls: reward over-optimisation, observable.

Everything here is deterministic under a seed.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.core.errors import ConfigError
from rlhfkit.data.comparisons import comparison_problem
from rlhfkit.data.votelog import pairwise_vote, ranking_vote
from rlhfkit.models.loading import PAD_TOKEN

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruits": ("apple", "pear", "plum", "grape", "lemon", "mango", "peach", "cherry", "melon", "kiwi"),
    "colors": ("red", "blue", "green", "yellow", "pink", "black", "white", "brown", "purple", "gray"),
    "animals": ("cat", "dog", "horse", "cow", "sheep", "goat", "lion", "tiger", "bear", "wolf"),
    "tools": ("hammer", "saw", "drill", "wrench", "chisel", "pliers", "axe", "spade", "rake", "vise"),
    "countries": ("france", "spain", "italy", "japan", "china", "india", "peru", "chile", "egypt", "kenya"),
    "drinks": ("tea", "coffee", "milk", "juice", "water", "soda", "cocoa", "wine", "beer", "cider"),
}
TEMPLATES = ("List {n} {category}.", "Name {n} {category}.", "Give me {n} {category}.")
MAX_COUNT = 4
PROMPT_FORMAT = "Q: {instruction}\nA:"
_PROMPT_RE = re.compile(r"(?:List|Name|Give me) (\d+) (\w+)\.")
_ALL_WORDS = tuple(w for words in CATEGORIES.values() for w in words)

# Gold-reward weights (see the module docstring).
WRONG_PENALTY = 0.5
EXTRA_PENALTY = 0.3
NO_PERIOD_PENALTY = 0.2


# ----------------------------------------------------------------------------- prompts and gold reward
def make_prompt(category: str, n: int, template: int = 0) -> str:
    """The prompt text for ``n`` items of ``category``."""
    return PROMPT_FORMAT.format(instruction=TEMPLATES[template].format(n=n, category=category))


def parse_prompt(prompt: str) -> tuple[str, int]:
    """Return ``(category, n)`` of a lab prompt; raises ConfigError for a prompt that is not the lab's."""
    m = _PROMPT_RE.search(prompt)
    if not m or m.group(2) not in CATEGORIES:
        raise ConfigError(f"not a lab prompt: {prompt!r}; lab prompts look like {make_prompt('fruits', 3)!r}")
    return m.group(2), int(m.group(1))


def make_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` random lab prompts (category, count 1..4 and template drawn uniformly)."""
    rng = random.Random(seed)
    cats = list(CATEGORIES)
    return [make_prompt(rng.choice(cats), rng.randint(1, MAX_COUNT), rng.randrange(len(TEMPLATES))) for _ in range(n)]


def parse_items(response: str) -> list[str]:
    """The list items of a response: split on commas, strip spaces and the final period, lower-case."""
    text = response.strip()
    if text.endswith("."):
        text = text[:-1]
    return [item.strip().lower() for item in text.split(",") if item.strip()]


def count_items(response: str) -> int:
    """Number of items in a response: the length proxy that biased labelers (and reward models) reward."""
    return len(parse_items(response))


def gold_reward(prompt: str, response: str) -> float:
    """The lab's gold reward of ``response`` to ``prompt``, in [-1, 1] (definition in the module docstring)."""
    category, n = parse_prompt(prompt)
    items = parse_items(response)
    words = set(CATEGORIES[category])
    distinct_right = {item for item in items if item in words}
    wrong = sum(item not in words for item in items) + (sum(item in words for item in items) - len(distinct_right))
    extra = max(0, len(items) - n)
    gold = min(len(distinct_right), n) / n - WRONG_PENALTY * wrong / n - EXTRA_PENALTY * extra
    if not response.strip().endswith("."):
        gold -= NO_PERIOD_PENALTY
    return float(np.clip(gold, -1.0, 1.0))


def gold_rewards(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Vector of :func:`gold_reward` over paired prompts and responses."""
    return np.array([gold_reward(p, r) for p, r in zip(prompts, responses, strict=True)], dtype=np.float64)


def lab_gold(prompts: Sequence[str], completions: Sequence[str], **_) -> list[float]:
    """:func:`gold_reward` with TRL's reward-function signature: pass it to GRPO with weight 0 or to PPO's
    ``metric_funcs`` to log the gold reward beside the proxy (as ``rewards/lab_gold/mean``) without optimising it."""
    return gold_rewards(prompts, completions).tolist()


GOLD_KEY = "rewards/lab_gold/mean"  # how the trainers log lab_gold as a metric function (mean over a batch)


# ----------------------------------------------------------------------------- responses
def _format(items: Sequence[str], period: bool = True) -> str:
    return " " + ", ".join(items) + ("." if period else "")


def perfect_response(prompt: str, rng: random.Random) -> str:
    """A response with gold reward 1.0."""
    category, n = parse_prompt(prompt)
    return _format(rng.sample(CATEGORIES[category], n))


def candidates(prompt: str, k: int, rng: random.Random | np.random.Generator | int | None = None) -> list[str]:
    """``k`` candidate responses of varied quality and length (for comparisons and rankings).

    Each candidate has between ``n - 2`` and ``n + 3`` items; each item is a right word with a
    probability drawn per candidate from [0.4, 1], otherwise a word from another category; a few
    have a repeated item or no final period.
    """
    rng = _as_random(rng)
    category, n = parse_prompt(prompt)
    right = CATEGORIES[category]
    others = [w for w in _ALL_WORDS if w not in right]
    out = []
    for _ in range(k):
        m = max(1, min(n + rng.randint(-2, 3), 7))
        p_right = rng.uniform(0.4, 1.0)
        pool = list(right)
        rng.shuffle(pool)
        items = [pool.pop() if rng.random() < p_right else rng.choice(others) for _ in range(m)]
        if m > 1 and rng.random() < 0.1:
            items[-1] = items[0]
        out.append(_format(items, period=rng.random() > 0.1))
    return out


def demonstrations(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` SFT demonstrations of mixed quality, as ``{"prompt", "completion"}`` rows.

    Like human demonstrations, they are mostly right but not always: 50% perfect, 15% with one item
    from the wrong category, 15% one item short, 10% one item too many, 10% without the final period.
    """
    rng = random.Random(seed)
    rows = []
    for prompt in make_prompts(n, seed=seed + 1):
        category, count = parse_prompt(prompt)
        items = rng.sample(CATEGORIES[category], count)
        period = True
        u = rng.random()
        if u < 0.15:
            items[rng.randrange(count)] = rng.choice([w for w in _ALL_WORDS if w not in CATEGORIES[category]])
        elif u < 0.30 and count > 1:
            items = items[:-1]
        elif u < 0.40:
            items.append(rng.choice([w for w in CATEGORIES[category] if w not in items]))
        elif u < 0.50:
            period = False
        rows.append({"prompt": prompt, "completion": _format(items, period)})
    return rows


def _as_random(rng: random.Random | np.random.Generator | int | None) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(2**31)))
    return random.Random(rng)


# ----------------------------------------------------------------------------- simulated labelers
# The default pool of the pipeline and the recipes: five labelers of rising noise, the last one close to random
# (agreement filtering should flag it).
DEFAULT_NOISE = (0.1, 0.15, 0.2, 0.25, 0.45)


class LabelerPool:
    """Simulated human labelers comparing responses.

    Labeler ``j`` decides a comparison of responses ``a`` and ``b`` like this:

    1. with probability ``length_bias[j]``, and when the two responses have different numbers of
       items, prefer the longer one (a known human bias); otherwise
    2. prefer the response with the higher gold reward (a fair coin when the gold rewards are equal);
    3. then flip that decision with probability ``noise[j]``.

    So for an unbiased labeler the realised rate of votes against the gold preference (on pairs whose
    gold rewards differ) is ``noise[j]``.

    Where the display order is known (:meth:`answer`), a labeler first judges by position alone with probability
    ``position_bias[j]``: the response shown on the left is preferred (before the flip of step 3), so the rate of
    left choices under a random display order is ``position_bias * (1 - noise) + (1 - position_bias) / 2``. With the
    default 0 the labelers have no position effect.

    Args:
        n_labelers: size of the pool.
        noise: flip probability, one float for all labelers or one per labeler, each in [0, 1].
        length_bias: probability of judging by length alone, float or per labeler, each in [0, 1].
        seed: seed of the pool's random generator.
        position_bias: probability of judging by position alone (the left response), float or per labeler.
    """

    def __init__(
        self,
        n_labelers: int = 5,
        noise: float | Sequence[float] = 0.2,
        length_bias: float | Sequence[float] = 0.0,
        seed: int = 0,
        position_bias: float | Sequence[float] = 0.0,
    ):
        if n_labelers < 1:
            raise ConfigError(f"n_labelers={n_labelers} must be >= 1")
        self.n_labelers = n_labelers
        self.noise = self._per_labeler("noise", noise)
        self.length_bias = self._per_labeler("length_bias", length_bias)
        self.position_bias = self._per_labeler("position_bias", position_bias)
        self.rng = np.random.default_rng(seed)

    def _per_labeler(self, name: str, value: float | Sequence[float]) -> np.ndarray:
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(self.n_labelers, float(arr))
        if arr.shape != (self.n_labelers,) or ((arr < 0) | (arr > 1)).any():
            raise ConfigError(f"{name}={value!r}: give one probability in [0, 1] or one per labeler")
        return arr

    def vote(
        self,
        prompts: Sequence[str],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        labelers_per_item: int | None = None,
    ) -> np.ndarray:
        """Votes of every labeler on every comparison.

        Returns an int8 array of shape ``(n_items, n_labelers)``: 1 = ``a`` preferred, 0 = ``b``
        preferred, -1 = this labeler did not rate the item (when ``labelers_per_item`` is smaller
        than the pool, each item is rated by that many labelers drawn at random).
        """
        gold_a = gold_rewards(prompts, responses_a)
        gold_b = gold_rewards(prompts, responses_b)
        len_a = np.array([count_items(r) for r in responses_a])
        len_b = np.array([count_items(r) for r in responses_b])
        return self.vote_arrays(gold_a, gold_b, len_a, len_b, labelers_per_item)

    def vote_arrays(
        self,
        gold_a,
        gold_b,
        len_a,
        len_b,
        labelers_per_item: int | None = None,
        *,
        a_left: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """:meth:`vote` on precomputed gold rewards and item counts (vectorised over items and labelers).

        ``a_left``: bool ``(n_items, n_labelers)``, whether ``a`` was shown on the left (the position bias needs it);
        ``rng``: the generator to draw from (default: the pool's).
        """
        rng = self.rng if rng is None else rng
        n_items, n_lab = len(gold_a), self.n_labelers
        shape = (n_items, n_lab)
        gold_pref = np.where((gold_a == gold_b)[:, None], rng.random(shape) < 0.5, (gold_a > gold_b)[:, None])
        by_length = (rng.random(shape) < self.length_bias) & (len_a != len_b)[:, None]
        pref = np.where(by_length, (len_a > len_b)[:, None], gold_pref)
        if a_left is not None and self.position_bias.any():
            pref = np.where(rng.random(shape) < self.position_bias, a_left, pref)
        flip = rng.random(shape) < self.noise
        votes = np.where(flip, ~pref, pref).astype(np.int8)
        if labelers_per_item is not None and labelers_per_item < n_lab:
            if labelers_per_item < 1:
                raise ConfigError(f"labelers_per_item={labelers_per_item} must be >= 1")
            order = np.argsort(rng.random(shape), axis=1)
            unrated = np.zeros(shape, dtype=bool)
            np.put_along_axis(unrated, order[:, labelers_per_item:], True, axis=1)
            votes[unrated] = -1
        return votes

    def rank(
        self, prompt: str, responses: Sequence[str], labeler: int, rng: np.random.Generator | None = None
    ) -> list[int]:
        """Labeler ``labeler``'s ranking of ``responses``: ``ranking[i]`` is the rank of response ``i``
        (0 = best; identical responses share a rank).

        The labeler orders by length with probability ``length_bias``, else by gold reward plus
        Gaussian noise of standard deviation ``noise`` (a ranking analogue of the pairwise flip). ``rng``: the
        generator to draw from (default: the pool's).
        """
        rng = self.rng if rng is None else rng
        gold = gold_rewards([prompt] * len(responses), responses)
        if rng.random() < self.length_bias[labeler]:
            utility = np.array([count_items(r) for r in responses], dtype=np.float64) + 1e-3 * gold
        else:
            utility = gold + rng.normal(0.0, self.noise[labeler] + 1e-9, len(responses))
        for i, r in enumerate(responses):  # identical texts get identical utility: a tie
            utility[i] = utility[list(responses).index(r)]
        order = sorted(set(utility.tolist()), reverse=True)
        return [order.index(u) for u in utility.tolist()]

    def answer(
        self,
        comparisons: Sequence[dict[str, Any]],
        *,
        labelers_per_item: int | None = None,
        mode: str = "pairwise",
        seed: int = 0,
    ) -> list[dict[str, Any]]:
        """The pool's votes on comparisons rows (:mod:`rlhfkit.data.comparisons`) as vote rows
        (:mod:`rlhfkit.data.votelog`), labeler ``j`` named ``lab:<j>``: what ``rlhfkit label`` writes for people.

        ``pairwise``: every pair ``(i, j)``, ``i < j``, of an item's K responses (the one pair ``[0, 1]`` for K = 2)
        is judged as :meth:`vote` judges it, by every labeler or by ``labelers_per_item`` of them drawn per pair.
        ``ranking``: each labeler (or ``labelers_per_item`` drawn per item) orders the K responses as :meth:`rank`
        does, equal utilities as one tied group. ``shown_order`` is a seeded shuffle per vote; it matters only through
        ``position_bias``. Deterministic in ``seed`` (the pool's own generator is not drawn from).
        """
        if mode not in ("pairwise", "ranking"):
            raise ConfigError(f"mode={mode!r} must be 'pairwise' or 'ranking'")
        if labelers_per_item is not None and not 1 <= labelers_per_item <= self.n_labelers:
            raise ConfigError(f"labelers_per_item={labelers_per_item} must be in 1..{self.n_labelers} (the pool)")
        for n, row in enumerate(comparisons, start=1):
            problem = comparison_problem(row) or (None if isinstance(row["prompt"], str) else "prompt is not text")
            if problem:
                raise ConfigError(f"comparisons row {n} {problem}; the lab's labelers judge lab comparisons")
        rng = np.random.default_rng(seed)
        if mode == "ranking":
            return self._answer_ranking(comparisons, labelers_per_item, rng)
        return self._answer_pairwise(comparisons, labelers_per_item, rng)

    def _answer_pairwise(self, rows, labelers_per_item, rng) -> list[dict[str, Any]]:
        pairs = [(row, i, j) for row in rows for i, j in combinations(range(len(row["responses"])), 2)]
        prompts = [row["prompt"] for row, _, _ in pairs]
        resp_a = [row["responses"][i] for row, i, _ in pairs]
        resp_b = [row["responses"][j] for row, _, j in pairs]
        a_left = rng.random((len(pairs), self.n_labelers)) < 0.5
        votes = self.vote_arrays(
            gold_rewards(prompts, resp_a),
            gold_rewards(prompts, resp_b),
            np.array([count_items(r) for r in resp_a]),
            np.array([count_items(r) for r in resp_b]),
            labelers_per_item,
            a_left=a_left,
            rng=rng,
        )
        out = []
        for p, (row, i, j) in enumerate(pairs):
            for lab in np.flatnonzero(votes[p] >= 0).tolist():
                shown = [i, j] if a_left[p, lab] else [j, i]
                out.append(pairwise_vote(row, f"lab:{lab}", (i, j), "a" if votes[p, lab] == 1 else "b", shown))
        return out

    def _answer_ranking(self, rows, labelers_per_item, rng) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            k = len(row["responses"])
            labelers = range(self.n_labelers)
            if labelers_per_item is not None:
                labelers = sorted(rng.choice(self.n_labelers, size=labelers_per_item, replace=False).tolist())
            for lab in labelers:
                ranks = self.rank(row["prompt"], row["responses"], lab, rng=rng)
                groups = [[i for i in range(k) if ranks[i] == r] for r in sorted(set(ranks))]
                out.append(ranking_vote(row, f"lab:{lab}", groups, rng.permutation(k).tolist()))
        return out


def comparison_dataset(
    n_items: int, pool: LabelerPool, seed: int = 0, labelers_per_item: int | None = None
) -> list[dict]:
    """``n_items`` comparisons of two different candidates, with every labeler's vote.

    Rows: ``{"prompt", "response_a", "response_b", "votes": list[int], "gold_a", "gold_b"}`` where
    ``votes`` follows :meth:`LabelerPool.vote` (1 = a, 0 = b, -1 = not rated).
    """
    rng = random.Random(seed)
    prompts = make_prompts(n_items, seed=seed)
    pairs = []
    for prompt in prompts:
        a, b = candidates(prompt, 2, rng)
        while a == b:
            b = candidates(prompt, 1, rng)[0]
        pairs.append((a, b))
    resp_a, resp_b = [a for a, _ in pairs], [b for _, b in pairs]
    votes = pool.vote(prompts, resp_a, resp_b, labelers_per_item=labelers_per_item)
    gold_a, gold_b = gold_rewards(prompts, resp_a), gold_rewards(prompts, resp_b)
    return [
        {
            "prompt": p,
            "response_a": a,
            "response_b": b,
            "votes": v.tolist(),
            "gold_a": float(ga),
            "gold_b": float(gb),
        }
        for p, a, b, v, ga, gb in zip(prompts, resp_a, resp_b, votes, gold_a, gold_b)
    ]


def ranking_dataset(n_prompts: int, k: int, pool: LabelerPool, seed: int = 0) -> list[dict]:
    """``n_prompts`` K-wise rankings (InstructGPT collected K = 4..9), each by one random labeler.

    Rows: ``{"prompt", "responses": list[str], "ranking": list[int], "labeler": int}``.
    """
    if k < 2:
        raise ConfigError(f"k={k}: a ranking needs at least 2 responses")
    rng = random.Random(seed)
    rows = []
    for prompt in make_prompts(n_prompts, seed=seed):
        responses = candidates(prompt, k, rng)
        labeler = rng.randrange(pool.n_labelers)
        rows.append(
            {
                "prompt": prompt,
                "responses": responses,
                "ranking": pool.rank(prompt, responses, labeler),
                "labeler": labeler,
            }
        )
    return rows


# ----------------------------------------------------------------------------- tiny models
@dataclass(frozen=True)
class TinySize:
    """Dimensions of a lab model (a Llama-architecture causal LM)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    max_position_embeddings: int = 128


# Hidden sizes are multiples of 64: bitsandbytes' CPU 4-bit kernel needs in_features >= its block size (64).
# nano: builds and trains in seconds (tests). demo: learns the task in a few CPU minutes (`rlhfkit demo`). judge: the
# lab judge (rlhfkit.feedback.lab_judge), whose judging prompts (a principle, a prompt, two answers) run to ~90 tokens.
TINY_SIZES = {
    "nano": TinySize(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, vocab_size=512
    ),
    "demo": TinySize(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, vocab_size=512
    ),
    "judge": TinySize(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=768,
        max_position_embeddings=256,
    ),
}
EOS_TOKEN = "<|endoftext|>"
# A minimal chat template in the lab's own "Q: ...\nA:" format, so conversational data works too.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Q: ' + message['content'] + '\\nA:' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}"
)


def lab_corpus(seed: int = 0) -> list[str]:
    """Texts the lab tokenizer is trained on: every word of every category in every template."""
    texts = [make_prompt(c, n, t) for c in CATEGORIES for n in range(1, MAX_COUNT + 1) for t in range(len(TEMPLATES))]
    texts += [" " + ", ".join(words) + "." for words in CATEGORIES.values()]
    texts += [row["prompt"] + row["completion"] for row in demonstrations(300, seed=seed)]
    return texts


def build_tiny_model(
    out_dir: str | os.PathLike,
    size: str = "nano",
    seed: int = 0,
    *,
    pad_token: bool = True,
    chat_template: bool = True,
    corpus: Sequence[str] = (),
) -> Path:
    """Train a byte-level BPE tokenizer on the lab corpus and save it with a fresh Llama causal LM.

    The folder is written with ``save_pretrained`` (safetensors), so every rlhfkit module loads it
    exactly as it loads a hub model. ``pad_token=False`` / ``chat_template=False`` build a tokenizer
    lacking those (as many hub tokenizers do), to exercise :func:`rlhfkit.models.loading.prepare_tokenizer`.
    ``corpus``: texts the tokenizer learns besides :func:`lab_corpus` (the lab judge's judging prompts).
    """
    if size not in TINY_SIZES:
        raise ConfigError(f"size={size!r} is not a lab model size; choose one of {sorted(TINY_SIZES)}")
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from rlhfkit.core.io import atomic_path

    dims = TINY_SIZES[size]
    specials = [EOS_TOKEN] + ([PAD_TOKEN] if pad_token else [])
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=dims.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(lab_corpus(seed) + list(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN if pad_token else None
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = dims.max_position_embeddings

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden_size,
        intermediate_size=dims.intermediate_size,
        num_hidden_layers=dims.num_hidden_layers,
        num_attention_heads=dims.num_attention_heads,
        num_key_value_heads=dims.num_attention_heads,
        max_position_embeddings=dims.max_position_embeddings,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)
