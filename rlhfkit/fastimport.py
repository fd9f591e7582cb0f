"""TRL's config classes without the training stack: what makes ``rlhfkit run --check`` take ~3.5 s, not ~8.

Building a TRL config (every one subclasses transformers' ``TrainingArguments``) needs torch and transformers, but it
imports much more on the way, and none of it is used to build a config:

* ``transformers.trainer_utils`` (imported by ``training_args``) imports ``PeftModel`` at import time when peft is
  installed, and peft imports bitsandbytes (~4 s on a CPU);
* ``TrainingArguments.__post_init__`` asks ``transformers.integrations`` whether Kubeflow is running, which imports
  ``integration_utils`` and with it ``modeling_utils`` (~2.5 s), only to read two environment variables.

:func:`import_trl_configs_fast` removes both costs without changing an answer: ``trainer_utils`` is imported with
peft reported unavailable and then gets an ``is_peft_available`` that imports the two peft classes into it on its
first call (from then on it answers as transformers' own), and ``transformers.integrations`` gets an
``is_kubeflow_available`` identical to transformers' own (two environment variables; installed only where the
installed transformers' source of it is word for word the one copied here).
Each step checks that the installed transformers is shaped as expected and otherwise does nothing: the configs then
import at their usual cost. The check-only commands (``run --check``, ``plan --config``) call it first; a training
process does not need it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

PEFT_IMPORT = "from peft import PeftMixedModel, PeftModel"  # the one peft import of transformers.trainer_utils


def _source(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin).read_text() if spec is not None and spec.origin else None


def defer_peft_import() -> bool:
    """Import ``transformers.trainer_utils`` without peft; peft's classes arrive on the first ``is_peft_available()``.
    Returns whether it did (not when ``trainer_utils`` is already imported, peft is missing, or the module imports
    anything else from peft)."""
    if "transformers.trainer_utils" in sys.modules:
        return False
    source = _source("transformers.trainer_utils") or ""
    if [line.strip() for line in re.findall(r"^\s*from peft import .*$", source, re.MULTILINE)] != [PEFT_IMPORT]:
        return False
    import transformers.utils as hf_utils

    real = hf_utils.is_peft_available
    if not real():
        return False
    importing = True

    def is_peft_available(*args, **kwargs) -> bool:
        if importing:
            return False
        available = real(*args, **kwargs)
        if available and not hasattr(trainer_utils, "PeftModel"):
            from peft import PeftMixedModel, PeftModel

            trainer_utils.PeftModel, trainer_utils.PeftMixedModel = PeftModel, PeftMixedModel
        return available

    hf_utils.is_peft_available = is_peft_available
    try:
        import transformers.trainer_utils as trainer_utils
    finally:
        importing = False
        hf_utils.is_peft_available = real
    return True


# transformers 5's Kubeflow check, verbatim: installed only where the installed transformers has exactly this source
KUBEFLOW_CHECK_SOURCE = """def is_kubeflow_available():
    if os.getenv("DISABLE_KUBEFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        return False
    return os.getenv("KUBEFLOW_TRAINER_SERVER_URL") is not None
"""


def is_kubeflow_available() -> bool:
    """:data:`KUBEFLOW_CHECK_SOURCE`, the same function without the module it lives in."""
    if os.getenv("DISABLE_KUBEFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        return False
    return os.getenv("KUBEFLOW_TRAINER_SERVER_URL") is not None


def kubeflow_check_without_models() -> bool:
    """Give ``transformers.integrations`` :func:`is_kubeflow_available` without importing ``integration_utils`` (and
    ``modeling_utils``). Returns whether it did: not when ``integration_utils`` is already imported or its function
    is not :data:`KUBEFLOW_CHECK_SOURCE` word for word (another transformers version)."""
    if "transformers.integrations.integration_utils" in sys.modules:
        return False
    match = re.search(
        r"^def is_kubeflow_available\(\):\n(?:[ \t]+.*\n)+",
        _source("transformers.integrations.integration_utils") or "",
        re.MULTILINE,
    )
    if match is None or match.group(0) != KUBEFLOW_CHECK_SOURCE:
        return False
    import transformers.integrations as integrations

    integrations.is_kubeflow_available = is_kubeflow_available
    return True


def import_trl_configs_fast() -> None:
    """Both of the above: then ``from trl import SFTConfig`` and building one cost torch + transformers, ~3 s."""
    defer_peft_import()
    kubeflow_check_without_models()
