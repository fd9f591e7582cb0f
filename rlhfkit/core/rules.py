"""The value rules of every config field, applied by field type and name, so a field added later is checked too.

Each trainer config (TRL's ``SFTConfig`` / ``RewardConfig`` / ``GRPOConfig``, rlhfkit's ``PPOConfig``) and each of
rlhfkit's own sections is checked the same way, and every problem is reported, one line each:

* :func:`check_values` -- values as a user wrote them (YAML, ``--set``, Python keywords), before the config is
  built: numbers written as strings become numbers (PyYAML reads ``1e-4`` as a string), then each value must match
  its field's type (``int``, ``float``, ``bool``, ``Literal[...]``; optional ones may be null) and its range.
* :func:`config_problems` -- the range of every field of a built config (presets and defaults included).

A field's range comes from its class's ``RANGES`` (``{name: Range}``, a ``ClassVar`` of rlhfkit's own classes: field
metadata cannot hold it, since ``HfArgumentParser`` passes metadata to argparse), else from :data:`NAME_RULES` by
field name (TRL's fields: learning rates > 0, batch sizes >= 1, KL coefficients >= 0, ...).
Fields with other types (enums, dicts, unions of several kinds) are left to the config class itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """An allowed interval of a numeric field (of each element, for a list), plus special values allowed outside it.

    ``example`` is the value a message suggests (``1.0e-5``).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    special: tuple = ()
    example: str = ""

    def allows(self, value: float) -> bool:
        if value in self.special:
            return True
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        if self.special:
            text += " (or " + " / ".join(map(str, self.special)) + ")"
        return text


POSITIVE = Range(0, low_open=True, example="1.0")
AT_LEAST_ONE = Range(1, example="8")
NON_NEGATIVE = Range(0, example="0.0")
PROBABILITY = Range(0, 1, example="0.5")
FRACTION = Range(0, 1, high_open=True, example="0.05")  # a share held out: 1 would leave nothing to train on

# TRL's / transformers' field names -> their range; the first matching pattern wins (fnmatch on the field name).
NAME_RULES: tuple[tuple[str, Range], ...] = (
    ("learning_rate", Range(0, low_open=True, example="1.0e-5")),
    ("*batch_size", Range(1, example="8")),
    ("gradient_accumulation_steps", Range(1, example="4")),
    ("num_train_epochs", Range(0, low_open=True, example="1")),
    ("max_steps", Range(1, special=(-1,), example="1000")),  # -1: train num_train_epochs
    ("warmup_steps", NON_NEGATIVE),
    ("warmup_ratio", PROBABILITY),
    ("logging_steps", Range(0, low_open=True, example="10")),
    ("save_steps", Range(0, low_open=True, example="500")),
    ("eval_steps", Range(0, low_open=True, example="500")),
    ("weight_decay", NON_NEGATIVE),
    ("max_grad_norm", NON_NEGATIVE),
    ("adam_beta1", Range(0, 1, high_open=True, example="0.9")),
    ("adam_beta2", Range(0, 1, high_open=True, example="0.999")),
    ("adam_epsilon", Range(0, low_open=True, example="1.0e-8")),
    ("seed", Range(0, example="0")),
    ("data_seed", Range(0, example="0")),
    ("ddp_timeout", Range(1, example="1800")),
    ("max_length", Range(1, example="512")),
    ("max_prompt_length", Range(1, example="256")),
    ("max_completion_length", Range(1, example="128")),
    ("response_length", Range(1, example="53")),
    ("max_new_tokens", Range(1, example="64")),
    ("kl_coef", Range(0, example="0.05")),
    ("beta", Range(0, example="0.04")),
    ("target_kl", Range(0, low_open=True, example="6.0")),
    ("kl_horizon", Range(1, example="10000")),
    ("temperature", Range(0, low_open=True, example="1.0")),
    ("top_p", Range(0, 1, low_open=True, example="1.0")),
    ("num_generations", Range(2, example="8")),  # GRPO's advantages compare completions within a group
    ("num_iterations", Range(1, example="1")),
    ("epsilon", Range(0, low_open=True, example="0.2")),
    ("epsilon_high", Range(0, low_open=True, example="0.28")),
    ("total_episodes", Range(1, example="10000")),
    ("num_ppo_epochs", Range(1, example="4")),
    ("num_mini_batches", Range(1, example="1")),
    ("cliprange", Range(0, low_open=True, example="0.2")),
    ("cliprange_value", Range(0, low_open=True, example="0.2")),
    ("vf_coef", NON_NEGATIVE),
    ("gamma", PROBABILITY),
    ("lam", PROBABILITY),
    ("missing_eos_penalty", NON_NEGATIVE),
    ("reward_std", Range(0, low_open=True, example="1.0")),
    ("kl_caution", Range(0, low_open=True, example="0.1")),  # nats per token of the starting answer length
    ("kl_limit", Range(0, low_open=True, example="0.12")),
    ("negative_kl_tolerance", NON_NEGATIVE),
    ("approx_kl_max", Range(0, low_open=True, example="0.1")),
    ("clip_fraction_max", PROBABILITY),
    ("truncation_rise", PROBABILITY),
    ("*_fraction", PROBABILITY),
    ("min_agreement", PROBABILITY),
    ("min_accuracy", PROBABILITY),
)


def range_of(cls: type, f: dataclasses.Field) -> Range | None:
    """A field's range: the class's ``RANGES[name]`` (rlhfkit's own classes set it), else the first
    :data:`NAME_RULES` pattern matching its name."""
    ranges = getattr(cls, "RANGES", {})
    if f.name in ranges:
        return ranges[f.name]
    return next((rule for pattern, rule in NAME_RULES if fnmatch.fnmatchcase(f.name, pattern)), None)


# ----------------------------------------------------------------------------------------------- types
@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be evaluated here: fall back to the raw field types
        return {f.name: f.type for f in dataclasses.fields(cls)}


def field_kind(cls: type, name: str) -> tuple[set[str], tuple]:
    """``(kinds, choices)`` of a field: kinds among ``int``, ``float``, ``bool``, ``str``, ``None`` (empty when the
    type is anything else: then it is not checked here), and the allowed values of a ``Literal``."""
    tp = _hints(cls).get(name)
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    kinds: set[str] = set()
    choices: tuple = ()
    for arg in args:
        if arg is type(None):
            kinds.add("None")
        elif arg in (int, float, bool, str):
            kinds.add(arg.__name__)
        elif typing.get_origin(arg) is typing.Literal:
            choices += typing.get_args(arg)
            kinds.add("literal")
        else:
            return set(), ()
    return kinds, choices


_WHAT = {"int": "a whole number", "float": "a number", "bool": "true or false"}


def _type_problem(cls: type, name: str, value: Any, where: str) -> str | None:
    kinds, choices = field_kind(cls, name)
    if not kinds or (value is None and "None" in kinds):
        return None
    if "literal" in kinds:
        if value in choices:
            return None
        allowed = ", ".join(repr(c) for c in choices) + (" or null" if "None" in kinds else "")
        return f"{where}={value!r} must be one of {allowed}"
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (
        ("bool" in kinds and isinstance(value, bool))
        or ("int" in kinds and is_number and float(value).is_integer())
        or ("float" in kinds and is_number)
        or ("str" in kinds and isinstance(value, (str, int, float, bool)))  # TRL turns some scalars into text
    ):
        return None
    main = next(k for k in ("int", "float", "bool", "str") if k in kinds)
    example = {"int": "8", "float": "1.0e-4", "bool": "true", "str": "text"}[main]
    what = _WHAT.get(main, "text")
    shown = "null" if value is None else repr(value)
    return f"{where}={shown} is not {what}; write one, e.g. {where.rsplit('.', 1)[-1]}: {example}"


# How transformers' HfArgumentParser reads a boolean flag's text.
_BOOLS = {
    "true": True,
    "t": True,
    "yes": True,
    "y": True,
    "1": True,
    "false": False,
    "f": False,
    "no": False,
    "n": False,
    "0": False,
}


def _coerce(cls: type, name: str, value: Any) -> Any:
    """A number written as a string (YAML 1.1 reads ``1e-4`` as one) for a numeric field, and a whole float for a
    whole-number field, as the number the field takes; ``true`` / ``false`` / ``None`` text (a command line) for a
    boolean or optional field as the value; any other value as it is."""
    kinds, _ = field_kind(cls, name)
    if isinstance(value, str) and "str" not in kinds:  # command-line text, as argparse / TRL's parser read it
        if "None" in kinds and value in ("None", "null"):
            return None
        if "bool" in kinds and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
    if not kinds & {"int", "float"} or "str" in kinds or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and "float" not in kinds and value.is_integer():
        return int(value)  # 1e3 for a whole-number field
    return value


def _range_problem(rule: Range | None, where: str, value: Any) -> str | None:
    if rule is None or value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    numbers = [x for x in items if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if all(rule.allows(x) for x in numbers):
        return None
    fix = f" (e.g. {where.rsplit('.', 1)[-1]}: {rule.example})" if rule.example else ""
    each = "each value " if isinstance(value, (list, tuple)) else ""
    return f"{where}={value!r}: {each}must be {rule.describe()}{fix}"


# ----------------------------------------------------------------------------------------------- checks
def check_values(cls: type, values: dict[str, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """Check the values given for ``cls``'s fields (unknown keys are left to the caller).

    Returns ``(values, problems)``: the values with numbers-as-strings converted, and one line per value of the
    wrong type or out of range (``prefix`` -- e.g. ``"sft."`` -- in front of each field name).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out, problems = dict(values), []
    for name, value in values.items():
        if name not in fields:
            continue
        value = out[name] = _coerce(cls, name, value)
        problem = _type_problem(cls, name, value, f"{prefix}{name}")
        if problem is None:
            problem = _range_problem(range_of(cls, fields[name]), f"{prefix}{name}", value)
        if problem:
            problems.append(problem)
    return out, problems


def config_problems(config: Any, prefix: str = "") -> list[str]:
    """One line per field of a built config (a dataclass instance) whose value is out of its range."""
    problems = []
    for f in dataclasses.fields(config):
        problem = _range_problem(range_of(type(config), f), f"{prefix}{f.name}", getattr(config, f.name, None))
        if problem:
            problems.append(problem)
    return problems


def unknown_keys(given, known, prefix: str = "", valid: str | None = None, what: str = "key(s)") -> list[str]:
    """One line naming the keys of ``given`` that are not in ``known`` (with the closest valid keys as a hint), or
    none. ``valid`` says where the valid keys are listed (default: they are listed in the message)."""
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return []
    close = [f"{prefix}{m[0]}" for k in unknown if (m := difflib.get_close_matches(k, known, n=1))]
    text = f"unknown {what} {[prefix + k for k in unknown]}"
    if close:
        text += f" (did you mean {', '.join(close)}?)"
    return [text + "; " + (valid or f"valid keys: {sorted(known)}")]
