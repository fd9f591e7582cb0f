"""Reward-model scoring exactly as the reward model was trained -- the one copy every stage uses.

* :func:`encode` / :func:`tokenize_pair` format a sequence exactly as TRL 1.16's ``RewardTrainer`` does at training
  time (``trl/trainer/reward_trainer.py``, ``_prepare_dataset``): explicit-prompt strings are ``prompt + chosen``
  with the tokenizer's EOS appended when missing, tokenized with ``tokenizer(text=...)`` (so BOS is added where the
  tokenizer adds it); conversational pairs are ``prompt + chosen`` messages rendered by the chat template
  (``apply_chat_template(tokenize=True)``, with the row's ``tools`` / ``chat_template_kwargs``), no extra EOS.
* :func:`score_token_ids` / :func:`score_texts` run the model in length-sorted batches and return one score per
  sequence. The score is the model's own pooled logit, read at the rightmost non-pad token (what
  ``RewardTrainer.compute_loss`` trains): with right padding (the default, as in TRL's collator) or left padding
  (positions are then counted from the first real token), batched scores equal one-at-a-time scores. If pad ==
  EOS, that token is the one before the final EOS, at training time too;
  :func:`rlhfkit.models.loading.prepare_tokenizer` avoids pad == EOS. Right-padded batches of a causal model run
  without an attention mask (the pads come after every real token, so they change nothing), which keeps SDPA on its
  causal kernel: see :func:`score_token_ids`.
* :func:`encode_pairs`: held-out preference pairs as token ids (``max_length`` filtered as in training).
* :class:`RewardModelScorer`: the same formatting and scoring as a GRPO reward function.
* Ensembles (:mod:`rlhfkit.reward.ensemble`: K members, each with its score mean / std): :class:`EnsembleScorer`
  scores with
  every member's :class:`RewardModelScorer`, standardises each with its own statistics and combines them with
  :func:`aggregate_rewards` (``mean`` | ``min`` | ``mean_minus_std``), logging the members' spread
  (:data:`ENSEMBLE_STD_KEY`) every batch; :func:`load_reward_function` loads the reward stage's ``model/`` -- one
  model or an ensemble -- as RL uses it (LoRA members: one base holding K adapters + heads).
  :func:`member_score_stats` measures a member's score mean / std when it is trained; :func:`proxy_scores` scores
  sampled responses with one model or an ensemble (what :func:`load_scorer` returns).
* :func:`sample_responses`: one sampled response per prompt from a saved policy, as the RL stage sampled
  (:func:`rlhfkit.models.sampling.generate`).

Who scores through this module: ``rm_eval.evaluate_reward_model`` (the pipeline's ``rm_eval``, ``recipes/reward.py``,
``rlhfkit eval-rm``), ``ensemble_eval.evaluate_ensemble``, the pipeline's ``final_eval`` (:func:`score_texts`, or an
ensemble's :class:`EnsembleScorer`), GRPO (:class:`RewardModelScorer` / :class:`EnsembleScorer`), PPO with an ensemble
(its reward-function path) and
PPO with a reward model that has its own tokenizer (``PPOTrainer._external_scores``: :func:`encode` on the decoded
text, EOS only after an answer that ended, then :func:`score_token_ids`).

PPO's in-rollout scoring (the reward model shares the policy's tokenizer, or is an adapter on the shared base) is a
different mechanism and deliberately does not call this module: it never leaves token space (no decode and
re-tokenise, which could change the ids the policy generated), reads the score with ``per_token_scores`` from the
same left-padded query + right-padded response tensors and ``position_ids`` the policy and value passes use, inside
the rollout's autocast chunks, and works for a reward *adapter* on the shared base, which is not a standalone model
with a pooling head. What it shares is the formatting contract: the policy's EOS ends the answer, and for chat
prompts the chat template's tokens after the EOS (``rlhfkit.rl.ppo.rollout.chat_suffix_ids``) are appended, so the
score is read at the token :func:`encode` would end on (``tests/rl/ppo/test_trainer.py`` checks both against the chat
template's rendering).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.hardware import detect_hardware
from rlhfkit.core.presets import MethodPreset, method_preset
from rlhfkit.models.loading import load_reward_model
from rlhfkit.models.sampling import generate, load_for_sampling
from rlhfkit.reward.ensemble import read_ensemble

logger = logging.getLogger(__name__)


def encode(tokenizer, text: str | list[dict], *, eos: bool = True, **chat_template_kwargs: Any) -> list[int]:
    """Token ids of one full sequence (prompt + response) as ``RewardTrainer`` builds them.

    A string gets ``tokenizer.eos_token`` appended unless it already ends with it (``eos=False``: nothing appended,
    for a PPO answer cut off before its EOS, scored at its last token as the rollout scores it) and is tokenized
    with the tokenizer's special tokens (a BOS where the tokenizer adds one); a list of messages is rendered with
    the chat template (which places its own end-of-turn tokens) and gets nothing appended.
    """
    if isinstance(text, str):
        if eos and tokenizer.eos_token and not text.endswith(tokenizer.eos_token):
            text = text + tokenizer.eos_token
        return list(tokenizer(text=text)["input_ids"])
    out = tokenizer.apply_chat_template(text, tokenize=True, return_dict=True, **chat_template_kwargs)
    return list(out["input_ids"])


def tokenize_pair(tokenizer, pair: dict) -> tuple[list[int], list[int]]:
    """``(chosen_ids, rejected_ids)`` of an explicit-prompt pair, identical to ``RewardTrainer``'s preprocessing."""
    from trl.data_utils import is_conversational

    kwargs: dict[str, Any] = {}
    if is_conversational(pair):
        tools = pair.get("tools")
        kwargs = {
            "tools": json.loads(tools) if isinstance(tools, str) else tools,
            **(pair.get("chat_template_kwargs") or {}),
        }
    prompt = pair["prompt"]
    return encode(tokenizer, prompt + pair["chosen"], **kwargs), encode(tokenizer, prompt + pair["rejected"], **kwargs)


def as_rows(pairs) -> list[dict]:
    if isinstance(pairs, list):
        return pairs
    if hasattr(pairs, "to_list"):  # datasets.Dataset
        return pairs.to_list()
    return list(pairs)


def encode_pairs(tokenizer, pairs, max_length: int | None = None) -> tuple[list[dict], list[list[int]], int]:
    """Token ids of held-out pairs as ``RewardTrainer`` built them: ``(kept rows, ids, n_dropped)``, where ``ids``
    holds the kept rows' chosen sequences, then their rejected ones, and pairs longer than ``max_length`` are
    dropped (as ``RewardTrainer`` filters with ``RewardConfig.max_length``)."""
    rows = as_rows(pairs)
    for i, row in enumerate(rows):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in row]
        if missing:
            raise DataError(
                f"pair {i}: missing {', '.join(missing)}; evaluate explicit-prompt pairs (prompt/chosen/rejected), "
                "e.g. converted with `rlhfkit data convert --format hh`"
            )
    encoded = [tokenize_pair(tokenizer, row) for row in rows]
    if max_length is not None:
        keep = [i for i, (c, r) in enumerate(encoded) if len(c) <= max_length and len(r) <= max_length]
    else:
        keep = list(range(len(rows)))
    n_dropped = len(rows) - len(keep)
    if not keep:
        raise DataError(f"all {len(rows)} pairs are longer than max_length={max_length} tokens; raise max_length")
    if n_dropped:
        logger.warning(
            "%d of %d pairs are longer than max_length=%d tokens and were not scored", n_dropped, len(rows), max_length
        )
    ids = [encoded[i][0] for i in keep] + [encoded[i][1] for i in keep]
    return [rows[i] for i in keep], ids, n_dropped


def resolve_pad_token_id(model, tokenizer) -> int:
    """The pad id the model's score pooling skips; set from the tokenizer (pad, else EOS) when the config has none.

    This is what ``RewardTrainer`` does before training, so the score is read at the same token as in training.
    """
    config = model.config.get_text_config()
    if config.pad_token_id is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ConfigError(
                "the reward model's config has no pad_token_id and the tokenizer has neither pad nor EOS token; "
                "load it with rlhfkit.models.loading.load_reward_model or set model.config.pad_token_id"
            )
        config.pad_token_id = pad
        logger.info("model.config.pad_token_id was unset; using %d as RewardTrainer does", pad)
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != config.pad_token_id:
        logger.warning(
            "tokenizer pad id %s != model.config.pad_token_id %s; padding with the model's (its pooling skips it)",
            tokenizer.pad_token_id,
            config.pad_token_id,
        )
    if config.pad_token_id == tokenizer.eos_token_id:
        logger.warning("pad == EOS: scores are read at the token before the final EOS (as RewardTrainer trained it)")
    return int(config.pad_token_id)


def attends_only_to_the_past(model) -> bool:
    """Whether every attention layer of ``model`` is causal, so that padding *after* a sequence cannot change it.

    transformers marks each attention module with ``is_causal`` (its SDPA / flash integrations read that flag) and
    switches a whole model to bidirectional attention with ``config.is_causal = False``. Decoder reward models
    (Llama, Qwen, Mistral, Gemma, GPT-2 ...) are causal; encoders (BERT, DeBERTa) and cross-attention are not.
    """
    flags = [m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)]
    return bool(flags) and all(flags) and getattr(model.config.get_text_config(), "is_causal", True) is not False


def score_token_ids(
    model,
    ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 16,
    padding_side: str = "right",
    device=None,
) -> np.ndarray:
    """Scores (float64, shape ``(len(ids),)``) of token sequences, in the order given.

    Sequences are sorted by length (longest first, so an out-of-memory error shows in the first batch) and cut
    into batches of ``batch_size``, so that a batch's lengths are close; each is padded to its longest only.
    The attention mask is passed only where it changes a score: a batch without padding needs none, and neither
    does a right-padded batch of a causal model (:func:`attends_only_to_the_past`: real tokens never see the
    pads after them). Without a mask, SDPA runs its causal kernel; with one, transformers builds a
    ``(batch, 1, L, L)`` mask and SDPA attends to every key (1.6x the CPU time of the same batches on HH-RLHF).
    ``padding_side="left"`` (or a bidirectional model) keeps the mask, and left padding passes ``position_ids``
    counted from each sequence's first real token, so positions match an unpadded pass. ``device``: where the
    model and inputs go (default: the model's device; the model is moved when ``device`` is given).
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side={padding_side!r} must be 'left' or 'right'")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    mask_free_padding = padding_side == "right" and attends_only_to_the_past(model)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    scores = np.empty(len(ids), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = len(ids[idx[0]])  # the longest of the batch
                input_ids = torch.full((len(idx), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    n = len(ids[i])
                    span = slice(0, n) if padding_side == "right" else slice(width - n, width)
                    input_ids[row, span] = torch.as_tensor(ids[i], dtype=torch.long)
                    mask[row, span] = 1
                kwargs = {"input_ids": input_ids.to(device)}
                if not (mask_free_padding or bool(mask.all())):
                    kwargs["attention_mask"] = mask.to(device)
                    if padding_side == "left":
                        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(device)
                logits = model(**kwargs).logits
                if logits.shape[-1] != 1:
                    raise ConfigError(
                        f"the reward model outputs {logits.shape[-1]} logits per sequence; a reward model has one "
                        "(load it with num_labels=1, e.g. rlhfkit.models.loading.load_reward_model)"
                    )
                scores[idx] = logits[:, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return scores


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str | list[dict]],
    batch_size: int = 16,
    *,
    padding_side: str = "right",
    device=None,
) -> np.ndarray:
    """Scores of full texts (strings, or message lists for the chat template), formatted by :func:`encode`."""
    ids = [encode(tokenizer, t) for t in texts]
    pad = resolve_pad_token_id(model, tokenizer)
    return score_token_ids(
        model, ids, pad_token_id=pad, batch_size=batch_size, padding_side=padding_side, device=device
    )


def member_score_stats(model, tokenizer, pairs: list[dict], max_length: int | None = None) -> tuple[float, float]:
    """Mean and standard deviation of a reward model's scores of the chosen and rejected responses of ``pairs``
    (scored as trained, :mod:`rlhfkit.models.scoring`; sequences longer than ``max_length`` tokens are skipped)."""
    ids = [seq for pair in pairs for seq in tokenize_pair(tokenizer, pair)]
    ids = [s for s in ids if max_length is None or len(s) <= max_length]
    if len(ids) < 2:
        raise DataError("fewer than two preference responses fit max_length; cannot standardise an ensemble member")
    scores = score_token_ids(model, ids, pad_token_id=resolve_pad_token_id(model, tokenizer))
    return float(scores.mean()), float(scores.std())


def proxy_scores(reward_model, reward_tokenizer, samples) -> np.ndarray:
    """The reward model's score of each of ``samples`` (a :class:`rlhfkit.models.sampling.Samples`), as
    :func:`load_scorer`
    loaded it: one model's raw score of prompt + response (:func:`score_texts`), or, with ``reward_tokenizer`` None,
    a reward function's (an ensemble's :class:`EnsembleScorer`: its members' standardised scores aggregated)."""
    if reward_tokenizer is not None:
        return score_texts(reward_model, reward_tokenizer, samples.full_texts(), device=reward_model.device)
    pairs = zip(samples.prompts, samples.texts, strict=True)  # TRL's completions: text, or the assistant's turn
    completions = [r if isinstance(p, str) else [{"role": "assistant", "content": r}] for p, r in pairs]
    return np.asarray(reward_model(list(samples.prompts), completions), dtype=np.float64)


REWARD_MODEL_NAME = "reward_model"  # TRL logs its scores as rewards/reward_model/mean and /std


class RewardModelScorer:
    """A GRPO reward function that scores completions with a trained reward model exactly as it was trained.

    TRL's ``RewardTrainer`` trains on ``prompt + chosen + eos_token`` tokenized with the tokenizer's special
    tokens (``add_special_tokens=True``) for text rows, and on the chat template applied to ``prompt + chosen``
    messages for conversational rows. ``GRPOTrainer``'s built-in reward-model path scores text rows as
    ``prompt + completion`` *without* EOS (its completions are decoded with ``skip_special_tokens=True``) and
    with ``add_special_tokens=False``, so the score is read at a different token than in training, and a BOS
    token a Llama-style tokenizer adds in training is missing. This scorer formats ``prompt + completion`` with
    :func:`encode` (EOS appended to text; the chat template for messages) and scores it with
    :func:`score_token_ids` (right padding with a pad token distinct from EOS, so the score is read at the last
    real token, as in training). A completion cut off by ``max_completion_length`` is scored as if it ended there
    (EOS appended); set ``mask_truncated_completions=True`` in the GRPOConfig to keep those out of the loss.

    Args:
        model: an ``AutoModelForSequenceClassification`` with one label (frozen here: eval mode, no gradients).
        tokenizer: the reward model's tokenizer (with a pad token distinct from EOS).
        mean, std: optional normalisation ``(score - mean) / std`` with the reward model's score statistics
            (e.g. from its evaluation); it matters when the reward model is combined with other reward
            functions by ``reward_weights``; GRPO's group normalisation makes it irrelevant alone.
        batch_size: completions scored per forward pass.
    """

    def __init__(self, model, tokenizer, *, mean: float | None = None, std: float | None = None, batch_size=64):
        if std is not None and not std > 0:
            raise ConfigError(f"reward_std={std} must be > 0; pass the reward model's score standard deviation")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ConfigError(
                "reward tokenizer: pad token must exist and differ from EOS (the score is read at the last non-pad "
                "token); load it with rlhfkit.models.loading.load_tokenizer"
            )
        self.model = model.eval().requires_grad_(False)
        self.model.config.pad_token_id = tokenizer.pad_token_id
        self.tokenizer = tokenizer
        self.mean = 0.0 if mean is None else float(mean)
        self.std = 1.0 if std is None else float(std)
        self.batch_size = batch_size
        self.__name__ = REWARD_MODEL_NAME  # TRL names the reward function's metrics after it

    def encode(self, prompt, completion) -> list[int]:
        """Token ids of one (prompt, completion), as ``RewardTrainer`` tokenizes ``(prompt, chosen)``."""
        return encode(self.tokenizer, prompt + completion)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        ids = [self.encode(p, c) for p, c in zip(prompts, completions, strict=True)]
        scores = score_token_ids(self.model, ids, pad_token_id=self.tokenizer.pad_token_id, batch_size=self.batch_size)
        return ((scores - self.mean) / self.std).tolist()


def sample_responses(
    model_dir: str,
    prompts: list,
    max_new_tokens: int,
    seed: int,
    temperature: float = 1.0,
    batch_size: int = 64,
    preset: str = "full",
) -> list[str]:
    """Sample one response per prompt at ``temperature`` with top_k 0 and top_p 1 (the policy RL optimised).

    Prompts are strings or chat messages (rendered with the chat template and its generation prompt). ``preset``
    ``qlora`` loads the model in 4 bits, as the RL stage did. The texts of
    :func:`rlhfkit.models.sampling.generate`, the one
    sampling loop (which also keeps the token ids, for the KL).
    """
    model, tokenizer = load_for_sampling(model_dir, preset)
    samples = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
    )
    return samples.texts


def load_scorer(model_dir: str, preset="full"):
    """A trained reward model for scoring, loaded as the RL stage loads it: 4-bit under ``qlora``, else on the GPU
    when there is one; in eval mode. Returns ``(model, tokenizer)``; for an ensemble's folder (``ensemble.json``)
    ``(EnsembleScorer, None)``: the mean of the members' standardised scores (:func:`load_reward_function`).
    :func:`proxy_scores` scores samples with either."""
    if read_ensemble(model_dir) is not None:
        scorer = load_reward_function(model_dir, preset)
        place_reward_function(scorer, detect_hardware().device)
        return scorer, None
    model, tokenizer = load_reward_model(model_dir, preset)
    if not getattr(model, "is_quantized", False):
        model.to(detect_hardware().device)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------ ensembles
# An ensemble's members (rlhfkit.reward.ensemble) are scored one by one with RewardModelScorer, each standardised
# with its own
# score mean / std: members trained from different seeds are then on one scale (the Bradley-Terry loss fixes score
# differences, not offsets, and an unstandardised spread would mostly measure offsets).
AGGREGATIONS = ("mean", "min", "mean_minus_std")
# The members' spread and mean, logged every batch under TRL's key for a per-response quantity (rewards/<name>/mean).
ENSEMBLE_STD_KEY = "rewards/ensemble_std/mean"
ENSEMBLE_MEAN_KEY = "rewards/ensemble_mean/mean"


def check_aggregation(aggregation: str, coef: float) -> None:
    """Raise a one-line :class:`ConfigError` for an unknown aggregation or a negative coefficient."""
    if aggregation not in AGGREGATIONS:
        raise ConfigError(f"reward_aggregation={aggregation!r} must be one of {AGGREGATIONS}")
    if coef < 0:
        raise ConfigError(f"reward_ensemble_coef={coef} must be >= 0 (it scales the members' std subtracted)")


def aggregate_rewards(scores, aggregation: str = "mean", coef: float = 1.0):
    """One reward per response from the members' standardised scores.

    Args:
        scores: ``(K, N)``: member k's standardised score of response n.
        aggregation: ``mean`` (the members' average), ``min`` (worst case, Coste et al.'s WCO) or
            ``mean_minus_std`` (``mean - coef * std``, the population std over members: an uncertainty penalty).
        coef: the std's weight in ``mean_minus_std`` (ignored otherwise).
    Returns:
        ``(N,)`` float tensor. With one member every aggregation is that member's score.
    """
    check_aggregation(aggregation, coef)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ConfigError(f"scores must be (members, responses), got shape {tuple(scores.shape)}")
    if aggregation == "min":
        return scores.min(0).values
    mean = scores.mean(0)
    if aggregation == "mean":
        return mean
    return mean - coef * scores.std(0, correction=0)


def ensemble_stats(scores) -> dict[str, float]:
    """Batch statistics of ``(K, N)`` standardised scores: the mean over responses of the members' std
    (:data:`ENSEMBLE_STD_KEY`) and of their mean (:data:`ENSEMBLE_MEAN_KEY`)."""
    return {
        ENSEMBLE_STD_KEY: float(scores.std(0, correction=0).mean()),
        ENSEMBLE_MEAN_KEY: float(scores.mean()),
    }


class EnsembleScorer:
    """K reward models as one reward function, TRL's signature ``f(prompts, completions, **kwargs) -> list[float]``.

    Each member is a :class:`RewardModelScorer` (scoring exactly as ``RewardTrainer`` trained it) holding its own
    standardisation (``mean`` / ``std``); members that are adapters of one peft model name their adapter, which is
    made active while they score. Each call also stores :attr:`last_scores` (``(K, N)``) and :attr:`last_stats`, and
    logs the stats through TRL GRPO's ``log_metric`` keyword when given.

    Args:
        members: one scorer per member.
        adapters: per member, the peft adapter to activate (None: the member is its own model).
        aggregation, coef: see :func:`aggregate_rewards`.
        mean, std: optional normalisation of the aggregate, ``(reward - mean) / std`` (e.g. the ensemble's score
            statistics from rm_eval), as :class:`RewardModelScorer` normalises one model's score.
    """

    def __init__(
        self,
        members: Sequence[RewardModelScorer],
        *,
        adapters: Sequence[str | None] | None = None,
        aggregation: str = "mean",
        coef: float = 1.0,
        mean: float | None = None,
        std: float | None = None,
    ):
        check_aggregation(aggregation, coef)
        if std is not None and not std > 0:
            raise ConfigError(f"reward_std={std} must be > 0; pass the ensemble's score standard deviation")
        if not members:
            raise ConfigError("EnsembleScorer needs at least one member")
        self.members = list(members)
        self.adapters = list(adapters) if adapters is not None else [None] * len(self.members)
        if len(self.adapters) != len(self.members):
            raise ConfigError(f"{len(self.adapters)} adapter names for {len(self.members)} members")
        self.aggregation, self.coef = aggregation, coef
        self.mean = 0.0 if mean is None else float(mean)
        self.std = 1.0 if std is None else float(std)
        self._last_completions: Sequence | None = None
        self.last_scores = None  # (K, N) tensor of the last call
        self.last_stats: dict[str, float] = {}
        self.__name__ = REWARD_MODEL_NAME

    @property
    def models(self) -> list:
        """The distinct member models (one peft model for adapter members), for the frozen-model check."""
        seen, out = set(), []
        for m in self.members:
            if id(m.model) not in seen:
                seen.add(id(m.model))
                out.append(m.model)
        return out

    def activate(self, k: int) -> RewardModelScorer:
        """Member ``k``, with its adapter made active when the members are adapters of one peft model."""
        member, adapter = self.members[k], self.adapters[k]
        if adapter is not None:
            member.model.set_adapter(adapter)
            member.model.requires_grad_(False)  # peft's set_adapter marks the active adapter trainable
        return member

    def member_scores(self, prompts: Sequence, completions: Sequence):
        """``(K, N)`` float32 tensor: the standardised scores of the (prompt, completion) pairs by every member."""
        import torch

        return torch.stack(
            [torch.as_tensor(self.activate(k)(prompts, completions), dtype=torch.float32) for k in range(len(self))]
        )

    def __len__(self) -> int:
        return len(self.members)

    def __call__(self, prompts, completions, log_metric: Callable[[str, float], None] | None = None, **kwargs):
        scores = self.member_scores(prompts, completions)
        self.last_scores, self.last_stats, self._last_completions = scores, ensemble_stats(scores), completions
        if log_metric is not None:  # TRL GRPO: averaged over the logging interval, logged beside `reward`
            for key, value in self.last_stats.items():
                log_metric(key, value)
        reward = aggregate_rewards(scores, self.aggregation, self.coef)
        return ((reward - self.mean) / self.std).tolist()

    def ensemble_std(self, prompts, completions, **kwargs) -> list[float]:
        """Per response, the members' std of standardised scores: a metric function (PPO's ``metric_funcs`` log
        it as ``rewards/ensemble_std/mean``). Reuses the scores of the last call on the same completions."""
        if completions is not self._last_completions or self.last_scores is None:
            self.last_scores, self._last_completions = self.member_scores(prompts, completions), completions
        return self.last_scores.std(0, correction=0).tolist()


def load_reward_function(
    path: str | os.PathLike,
    preset: str | MethodPreset = "full",
    *,
    aggregation: str = "mean",
    coef: float = 1.0,
    mean: float | None = None,
    std: float | None = None,
    trust_remote_code: bool = False,
) -> RewardModelScorer | EnsembleScorer:
    """The reward stage's ``model/`` folder as an RL reward function, loaded as RL uses it.

    One model: a :class:`RewardModelScorer` (optionally normalised with ``mean`` / ``std``). An ensemble
    (``ensemble.json``): an :class:`EnsembleScorer` whose members are standardised with their own statistics (then
    ``mean`` / ``std``, the ensemble's score statistics from rm_eval, are applied to the aggregate by the caller,
    e.g. PPO's ``reward_mean`` / ``reward_std``). Members saved with LoRA adapters share one base model (4-bit under
    ``qlora``) holding one adapter + score head per member; full members are K models.
    """
    check_aggregation(aggregation, coef)
    method = method_preset(preset) if isinstance(preset, str) else preset
    rm_preset = method_preset("qlora", task_type="SEQ_CLS") if method.quantization is not None else "full"
    kw = {"trust_remote_code": trust_remote_code}
    members = read_ensemble(path)
    if members is None:
        model, tokenizer = load_reward_model(path, rm_preset, **kw)
        return RewardModelScorer(model, tokenizer, mean=mean, std=std)
    if all(m.adapter_dir is not None for m in members) and method.lora is not None:
        from peft import PeftModel

        base, tokenizer = load_reward_model(_adapter_base(members[0].adapter_dir), rm_preset, **kw)
        names = [f"member_{k}" for k in range(len(members))]
        model = PeftModel.from_pretrained(base, str(members[0].adapter_dir), adapter_name=names[0])
        for name, m in zip(names[1:], members[1:]):
            model.load_adapter(str(m.adapter_dir), adapter_name=name)
        scorers = [RewardModelScorer(model, tokenizer, mean=m.mean, std=m.std) for m in members]
        return EnsembleScorer(scorers, adapters=names, aggregation=aggregation, coef=coef, mean=mean, std=std)
    scorers = []
    for m in members:
        model, tokenizer = load_reward_model(m.model_dir, rm_preset, **kw)
        scorers.append(RewardModelScorer(model, tokenizer, mean=m.mean, std=m.std))
    return EnsembleScorer(scorers, aggregation=aggregation, coef=coef, mean=mean, std=std)


def _adapter_base(adapter_dir) -> str:
    from peft import PeftConfig

    base = PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path
    if not base:
        raise ConfigError(f"adapter {str(adapter_dir)!r} does not name its base model; retrain the reward stage")
    return base


def place_reward_function(fn: Any, device) -> None:
    """Move a reward function's unquantised model(s) to ``device`` (4-bit models are placed when loaded)."""
    for model in getattr(fn, "models", None) or [getattr(fn, "model", None)]:
        if model is not None and not getattr(model, "is_loaded_in_4bit", False):
            model.to(device)
