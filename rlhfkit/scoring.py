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
  EOS, that token is the one before the final EOS, at training time too; :func:`rlhfkit.models.prepare_tokenizer`
  avoids pad == EOS. Right-padded batches of a causal model run without an attention mask (the pads come after
  every real token, so they change nothing), which keeps SDPA on its causal kernel: see :func:`score_token_ids`.
* :class:`RewardModelScorer`: the same formatting and scoring as a GRPO reward function.
* :func:`sample_responses`: one sampled response per prompt from a saved policy, as the RL stage sampled
  (:func:`rlhfkit.sampling.generate`).

Who scores through this module: ``rm_eval.evaluate_reward_model`` (the pipeline's ``rm_eval``, ``recipes/reward.py``,
``rlhfkit eval-rm``), the pipeline's ``final_eval`` (:func:`score_texts`), GRPO (:class:`RewardModelScorer`) and
PPO with a reward model that has its own tokenizer (``PPOTrainer._external_scores``: :func:`encode` on the decoded
text, EOS only after an answer that ended, then :func:`score_token_ids`).

PPO's in-rollout scoring (the reward model shares the policy's tokenizer, or is an adapter on the shared base) is a
different mechanism and deliberately does not call this module: it never leaves token space (no decode and
re-tokenise, which could change the ids the policy generated), reads the score with ``per_token_scores`` from the
same left-padded query + right-padded response tensors and ``position_ids`` the policy and value passes use, inside
the rollout's autocast chunks, and works for a reward *adapter* on the shared base, which is not a standalone model
with a pooling head. What it shares is the formatting contract: the policy's EOS ends the answer, and for chat
prompts the chat template's tokens after the EOS (``rlhfkit.ppo.rollout.chat_suffix_ids``) are appended, so the
score is read at the token :func:`encode` would end on (``tests/ppo/test_trainer.py`` checks both against the chat
template's rendering).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhfkit.errors import ConfigError
from rlhfkit.hardware import detect_hardware
from rlhfkit.models import load_reward_model
from rlhfkit.sampling import generate, load_for_sampling

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
                "load it with rlhfkit.models.load_reward_model or set model.config.pad_token_id"
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
                        "(load it with num_labels=1, e.g. rlhfkit.models.load_reward_model)"
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
                "token); load it with rlhfkit.models.load_tokenizer"
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
    ``qlora`` loads the model in 4 bits, as the RL stage did. The texts of :func:`rlhfkit.sampling.generate`, the one
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
    when there is one; in eval mode. Returns ``(model, tokenizer)``."""
    model, tokenizer = load_reward_model(model_dir, preset)
    if not getattr(model, "is_quantized", False):
        model.to(detect_hardware().device)
    return model.eval(), tokenizer
