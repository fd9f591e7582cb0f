"""Every bad input stopped at the door: a whole run is checked before anything runs, and every problem is reported.

* :func:`check_pipeline` -- what ``rlhfkit run`` (and ``--check``, and ``recipes/instructgpt.py``) calls: every value
  (:func:`rlhfkit.pipeline.config.load_config`), every data source, the model and the output folder; returns the
  config or raises one :class:`~rlhfkit.errors.ConfigError` listing all problems, before any folder is created.
* :func:`check_recipe` -- the same for a recipe's parsed arguments (values are checked by
  :func:`rlhfkit.config.parse_recipe`); :func:`run_recipe` parses, checks and runs a recipe's ``main`` through the
  one error path (:mod:`rlhfkit.entry`).
* :func:`check_preference_file`, :func:`check_plan_config` -- the same for ``data convert`` / ``agreement`` and
  ``plan --config`` (``eval-rm`` combines the ``*_problems`` functions below with its own pair loading).
* :func:`data_problems` (exists, readable, decodes, non-empty, has the columns a stage needs: only the first rows are
  read), :func:`model_problems` (config and tokenizer load; a reward model has a trained score head: no weights are
  loaded), :func:`output_dir_problems` and :func:`output_file_problems` (creatable, writable, not a file / a folder,
  and a run folder holds only what rlhfkit writes there).

Each ``*_problems`` function returns a list of one-line problems naming the key, the value and the fix.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import inspect
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.config import LAB_PREFIX, DataArguments, ModelArguments, parse_recipe, read_yaml
from rlhfkit.data import FORMATS, detect_format
from rlhfkit.entry import pop_debug, run_guarded
from rlhfkit.errors import ConfigError, DataError, raise_problems
from rlhfkit.monitors import MonitorConfig
from rlhfkit.pipeline.config import (
    RL_TRAINERS,
    STAGES,
    TRAINER_CONFIGS,
    DataSources,
    PipelineConfig,
    load_config,
    read_config,
)
from rlhfkit.pipeline.lock import LOCK_FILE
from rlhfkit.pipeline.manifest import MANIFEST
from rlhfkit.rules import check_values, unknown_keys

LAB = "lab"
PEEK_ROWS = 5  # rows read from a data source to check that it decodes and has its columns
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")
# Columns each pipeline stage needs (any one of the alternatives).
SFT_COLUMNS = (("prompt", "completion"), ("messages",), ("text",))
PROMPT_COLUMNS = (("prompt",),)
# What rlhfkit writes at the top of a run folder (besides the stage folders and temporary .NAME.*.tmp files).
RUN_FOLDER_FILES = (MANIFEST, LOCK_FILE, "report.md", "report.json", "plots", "base_model")
# What `rlhfkit compare` adds (rlhfkit.compare): a folder per algorithm, the best-of-N curve and the comparison;
# bench/alternatives_sweep.py keeps its runs in sweep/.
COMPARE_FILES = (*RL_TRAINERS, "best_of_n_curve.json", "compare.json", "compare.md", "compare.png", "sweep")


# ----------------------------------------------------------------------------------------------- data
class _Problem(Exception):
    """A data source cannot be read: the message says why and what to do (without the key and value)."""


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _data_suffix(path: Path) -> str | None:
    return next((s for s in path.suffixes if s.lower() in DATA_SUFFIXES), None)


def _peek_lines(path: Path) -> list[Any]:
    opener = gzip.open if _is_gz(path) else open
    rows: list[Any] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _Problem(
                    f"line {line_no} is not valid JSON ({e.msg}, column {e.colno}); fix or remove it"
                ) from None
            if len(rows) >= PEEK_ROWS:
                break
    return rows


def _peek_json(path: Path) -> list[Any]:
    opener = gzip.open if _is_gz(path) else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Problem(
            f"is not valid JSON ({e.msg} at line {e.lineno}); a file with one object per line must be named .jsonl"
        ) from None
    if not isinstance(data, list):
        raise _Problem(f"holds a JSON {type(data).__name__}, not a list of row objects; write [{{...}}, {{...}}]")
    return data[:PEEK_ROWS]


def _peek_csv(path: Path) -> list[Any]:
    opener = gzip.open if _is_gz(path) else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return [row for _, row in zip(range(PEEK_ROWS), reader)]


def _peek_parquet(path: Path) -> list[Any]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        batch = next(table.iter_batches(batch_size=PEEK_ROWS), None)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses for a file that is not Parquet
        raise _Problem(
            f"is not a readable Parquet file ({str(e).splitlines()[0]}); write it again, e.g. with "
            "pandas.DataFrame.to_parquet"
        ) from None
    return [] if batch is None else batch.to_pylist()


def peek_file(path: str | os.PathLike) -> list[Any]:
    """The first :data:`PEEK_ROWS` rows of a data file (.jsonl[.gz], .json, .parquet, .csv[.gz]); raises
    :class:`_Problem` when it does not decode."""
    path = Path(path)
    suffix = (_data_suffix(path) or "").lower()
    reader = {".jsonl": _peek_lines, ".ndjson": _peek_lines, ".json": _peek_json, ".csv": _peek_csv}
    try:
        return _peek_parquet(path) if suffix == ".parquet" else reader[suffix](path)
    except UnicodeDecodeError as e:
        raise _Problem(f"is not UTF-8 text (byte {e.object[e.start : e.start + 1]!r}); save it as UTF-8") from None
    except (gzip.BadGzipFile, zlib.error):
        raise _Problem("is not gzip-compressed although its name ends in .gz; rename it or gzip it") from None
    except EOFError:
        raise _Problem("is a truncated gzip file (it ends early); write it again") from None
    except PermissionError:
        raise _Problem("cannot be read (permission denied); check its permissions") from None
    except csv.Error as e:
        raise _Problem(f"is not valid CSV ({e}); fix the file") from None


def _peek_folder(folder: Path, split: str) -> tuple[list[Any], str]:
    """First rows of a dataset folder's ``split`` (files named after splits, or all files = train)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _data_suffix(p) and not p.name.startswith("."))
    if not files:
        raise _Problem(
            f"is a folder without data files ({', '.join(DATA_SUFFIXES)}); give a data file or a dataset folder"
        )
    named = [p for p in files if split in p.relative_to(folder).as_posix()]
    if not named and any(s in p.name for p in files for s in ("train", "test", "validation")):
        raise _Problem(f"has no files for split {split!r}; set data.split to one of its splits")
    if not named and split != "train":
        raise _Problem("has only a 'train' split (its file names name no split); set the split to 'train'")
    first = (named or files)[0]
    return peek_file(first), str(first)


def _peek_hub(name: str, split: str) -> list[Any]:
    import datasets

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or datasets.config.HF_HUB_OFFLINE
    try:
        if offline:  # only the local cache: load it (memory-mapped), take the first rows
            table = datasets.load_dataset(name, split=split)
            return table.select(range(min(PEEK_ROWS, len(table)))).to_list()
        stream = datasets.load_dataset(name, split=split, streaming=True)
        return [row for _, row in zip(range(PEEK_ROWS), stream)]
    except Exception as e:  # no such dataset / split, no network, not cached: datasets raises many kinds
        where = " (offline: only the local cache is searched)" if offline else ""
        raise _Problem(
            f"split {split!r} cannot be opened{where}: {str(e).splitlines()[0][:200]}; give a data file, a dataset "
            "folder or a hub dataset id and one of its splits"
        ) from None


def read_first_rows(source: str, split: str = "train") -> tuple[list[Any], str]:
    """``(rows, name)``: the first rows of a data file, dataset folder or hub dataset, and the file they came from."""
    path = Path(source).expanduser()
    if _data_suffix(path) is not None or path.is_file():
        if path.is_dir():
            raise _Problem("is a folder, but its name says a data file; give the file")
        if not path.exists():
            raise _Problem("not found; check the path (relative paths start where rlhfkit runs)")
        if _data_suffix(path) is None:
            raise _Problem(f"is not a data file rlhfkit reads; use {', '.join(DATA_SUFFIXES)} (optionally .gz)")
        return peek_file(path), str(path)
    if path.is_dir():
        return _peek_folder(path, split)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise _Problem("not found; check the path (relative paths start where rlhfkit runs)")
    return _peek_hub(source, split), source


def _first_rows(source: str, key: str, what: str, split: str) -> tuple[list[dict], list[str]]:
    """``(rows, problems)``: the first rows of a data source, or the one problem that stops reading them."""
    try:
        rows, _ = read_first_rows(source, split)
    except _Problem as p:
        return [], [f"{key}={source!r} {p}"]
    if not rows:
        return [], [f"{key}={source!r} has no rows; give a file with data ({what} needs rows)"]
    bad = next((i for i, row in enumerate(rows, start=1) if not isinstance(row, dict)), None)
    if bad is not None:
        kind = type(rows[bad - 1]).__name__
        return [], [f"{key}={source!r}: row {bad} is a {kind}, not an object with columns; write one object per row"]
    return rows, []


def data_problems(
    source: str, key: str, columns: Sequence[Sequence[str]], what: str, split: str = "train"
) -> list[str]:
    """Problems of a data source (``lab`` has none): it must exist, be readable, decode, hold rows (objects) and
    have one of ``columns``' alternatives (none: any columns). Only the first rows are read. ``what`` names the stage
    that needs them."""
    if source == LAB:
        return []
    rows, problems = _first_rows(source, key, what, split)
    if problems:
        return problems
    present = sorted({c for row in rows for c in row})
    if columns and not any(set(alt) <= set(present) for alt in columns):
        need = " or ".join("+".join(alt) for alt in columns)
        return [f"{key}={source!r} has columns {present}; {what} needs {need}: rename the columns or convert the file"]
    return []


def format_columns(fmt: str, options: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The columns a preference format reads: its converter's ``*_col`` arguments (``options`` over their defaults)
    and the ``*_cols`` ones given in ``options`` (per-labeler columns, which replace the votes list column)."""
    options = options or {}
    columns: list[str] = []
    for p in inspect.signature(FORMATS[fmt]).parameters.values():
        value = options.get(p.name, p.default)
        if p.name == "votes_col" and options.get("labeler_cols"):
            continue  # rlhfkit.data.votes: with labeler_cols the votes column is not read
        if p.name.endswith("_col") and isinstance(value, str):
            columns.append(value)
        elif p.name.endswith("_cols") and value:
            columns += [c.strip() for c in value.split(",")] if isinstance(value, str) else list(value)
    return tuple(columns)


def preference_problems(
    source: str, key: str, fmt: str, split: str = "train", options: dict[str, Any] | None = None, options_key: str = ""
) -> list[str]:
    """:func:`data_problems` for preference data in format ``fmt`` read with ``options`` (the reader's keywords);
    with ``auto`` the format must be detectable from the columns (:func:`rlhfkit.data.detect_format`), and every
    option must be one the format's reader takes (``options_key`` names them in messages)."""
    if source == LAB or (fmt != "auto" and fmt not in FORMATS):
        return []  # an unknown format is reported by the config's own checks
    rows, problems = _first_rows(source, key, "the preferences stage", split)
    if problems:
        return problems
    if fmt == "auto":
        try:
            fmt = detect_format(rows)
        except DataError as e:
            return [f"{key}={source!r}: {e.problems[0].removeprefix('rows: ')}"]
    takes = [p for p in inspect.signature(FORMATS[fmt]).parameters if p != "source"]
    unknown = unknown_keys(options or {}, takes, "", f"the {fmt} reader takes {takes}", "option(s)")
    if unknown:
        return [f"{options_key or key}: {unknown[0]}"]
    present = {c for row in rows for c in row}
    missing = [c for c in format_columns(fmt, options) if c not in present]
    if missing:
        return [
            f"{key}={source!r} has columns {sorted(present)}, not {'+'.join(missing)} that preference format {fmt!r} "
            "reads; rename the columns or name them in the format's options (*_col)"
        ]
    return []


# ----------------------------------------------------------------------------------------------- models
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
HEAD_NAMES = ("score", "classifier")  # the one-output head AutoModelForSequenceClassification adds


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.rstrip("/").count("/") > 1 or Path(name).expanduser().exists()


def _weight_names(folder: Path) -> list[str] | None:
    """Tensor names of a safetensors model folder, read from the file headers (no weights), or None without any."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    names = []
    for path in files:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            names += [k for k in json.loads(f.read(size)) if k != "__metadata__"]
    return names


def _reward_head_problem(folder: Path, key: str, config: dict[str, Any]) -> str | None:
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return (
            f"{key}={str(folder)!r} is a {'/'.join(archs) or 'model'} without a trained score head (not a reward "
            "model); give the model/ folder of a reward run (rlhfkit run's reward/model, recipes/reward.py)"
        )
    try:
        names = _weight_names(folder)
    except (OSError, ValueError):
        return f"{key}={str(folder)!r}: its safetensors files are unreadable; save the reward model again"
    if names is not None and not any(part in HEAD_NAMES for n in names for part in n.split(".")[:-1]):
        return f"{key}={str(folder)!r} holds no score-head weights ({'/'.join(HEAD_NAMES)}.weight); train it first"
    return None


def model_problems(
    name: str, key: str, *, reward: bool = False, revision: str | None = None, trust_remote_code: bool = False
) -> list[str]:
    """Problems of a model (``lab:*`` has none: it is built at run time): a local folder needs a ``config.json`` and a
    tokenizer that load (and, with ``reward``, a trained score head); a hub id must resolve (offline: be cached).
    Reads configs, tokenizer files and safetensors headers only: no weights."""
    name = str(name)
    if name.startswith(LAB_PREFIX):
        return []
    from transformers import AutoConfig, AutoTokenizer

    kw = {"revision": revision, "trust_remote_code": trust_remote_code}
    if _looks_local(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            return [f"{key}={name!r} does not exist; give an existing model folder or a hub id like 'org/name'"]
        if not folder.is_dir():
            return [f"{key}={name!r} is a file; give the model's folder (the one holding config.json)"]
        if not (folder / "config.json").is_file():
            return [f"{key}={name!r} has no config.json: not a model folder; give a folder written by save_pretrained"]
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            return [
                f"{key}={name!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); save the tokenizer there"
            ]
    problems = []
    try:
        config = AutoConfig.from_pretrained(name, **kw).to_dict()
    except Exception as e:  # OSError (not found / offline), ValueError (unknown model type), JSON errors
        return [
            f"{key}={name!r}: its config does not load ({str(e).splitlines()[0][:200]}); give a model folder or hub id"
        ]
    try:
        AutoTokenizer.from_pretrained(name, **kw)
    except Exception as e:
        problems.append(f"{key}={name!r}: its tokenizer does not load ({str(e).splitlines()[0][:200]}); save it again")
    if reward and _looks_local(name):
        problems += [p for p in [_reward_head_problem(Path(name).expanduser(), key, config)] if p]
    elif reward and not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        problems.append(f"{key}={name!r} is not a sequence-classification (reward) model; give a trained reward model")
    return problems


# ----------------------------------------------------------------------------------------------- outputs
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (a real probe: an unnamed temporary file, gone at once)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _creatable_problems(path: Path, key: str, what: str) -> list[str]:
    base = _nearest_existing(path.parent if not path.exists() else path)
    if not base.is_dir():
        return [
            f"{key}={str(path)!r}: {str(base)!r} is a file, so {what} cannot be created there; choose another path"
        ]
    if not _writable(base):
        return [
            f"{key}={str(path)!r}: {str(base)!r} is not writable; choose a writable location or fix its permissions"
        ]
    return []


def is_run_entry(name: str) -> bool:
    """Whether a name at the top of a run folder is one rlhfkit writes there."""
    return name in (*STAGES, *RUN_FOLDER_FILES, *COMPARE_FILES) or (name.startswith(".") and name.endswith(".tmp"))


def output_dir_problems(path: str | os.PathLike, key: str = "output_dir", run: bool = True) -> list[str]:
    """Problems of an output folder: not a file, creatable and writable; a ``run`` folder must be empty or hold only
    what rlhfkit writes in a run folder (rlhfkit never writes into, or deletes, a folder of someone else's)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        return [f"{key}={str(path)!r} is a file; give a folder path (rlhfkit will not overwrite the file)"]
    if not path.exists():
        return _creatable_problems(path, key, "the folder")
    problems = _creatable_problems(path, key, "the folder")
    foreign = sorted(p.name for p in path.iterdir() if not is_run_entry(p.name)) if run else []
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        problems.append(
            f"{key}={str(path)!r} holds files that are not an rlhfkit run's ({shown}); choose a new or empty folder "
            "(rlhfkit never writes into a folder it did not create)"
        )
    return problems


def output_file_problems(path: str | os.PathLike, key: str = "--out") -> list[str]:
    """Problems of an output file: not a folder, and its folder creatable and writable (an existing file is
    replaced atomically)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return [f"{key} {str(path)!r} is a folder; give a file name (rlhfkit will not replace a folder)"]
    return [p.replace(f"{key}=", f"{key} ", 1) for p in _creatable_problems(path, key, "the file")]


# ----------------------------------------------------------------------------------------------- whole runs
def _defaults(cls: type, given: Any) -> dict[str, Any]:
    values = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**values, **(given if isinstance(given, dict) else {})}


def pipeline_source_problems(raw: dict[str, Any]) -> list[str]:
    """The data sources, model and output folder of a raw pipeline config (values of the wrong type are left to
    :func:`~rlhfkit.pipeline.config.load_config`'s own messages)."""
    data = _defaults(DataSources, raw.get("data"))
    split = data["split"] if isinstance(data["split"], str) else "train"
    problems = []
    for name, columns, stage in (("sft", SFT_COLUMNS, "the SFT stage"), ("prompts", PROMPT_COLUMNS, "the RL stage")):
        if isinstance(data[name], str):
            problems += data_problems(data[name], f"data.{name}", columns, stage, split)
    options = data["preference_options"] if isinstance(data["preference_options"], dict) else None
    if isinstance(data["preferences"], str) and isinstance(data["preference_format"], str):
        problems += preference_problems(
            data["preferences"], "data.preferences", data["preference_format"], split, options,
            "data.preference_options",
        )  # fmt: skip
    model = _defaults(ModelArguments, raw.get("model"))
    if isinstance(model["model_name_or_path"], str):
        revision = model["model_revision"] if isinstance(model["model_revision"], str) else None
        problems += model_problems(model["model_name_or_path"], "model.model_name_or_path", revision=revision)
    if isinstance(raw.get("output_dir"), str) and raw["output_dir"].strip():
        problems += output_dir_problems(raw["output_dir"], "output_dir", run=True)
    return problems


def check_pipeline(
    source: str | os.PathLike | dict[str, Any], overrides: dict[str, Any] | None = None, *, sources: bool = True
) -> PipelineConfig:
    """Check a whole pipeline run before it starts: every value (:func:`~rlhfkit.pipeline.config.load_config`) and,
    with ``sources``, every data source, the model and the output folder. Returns the config; raises one
    :class:`ConfigError` listing every problem (one line each). Creates nothing."""
    raw = read_config(source, overrides)
    problems: list[str] = []
    cfg = None
    try:
        cfg = load_config(raw)
    except ConfigError as e:
        problems += e.problems
    if sources:
        problems += pipeline_source_problems(raw)
    raise_problems(problems)
    return cfg


def check_preference_file(source: str, out: str | None = None) -> None:
    """``rlhfkit data convert`` / ``data agreement``: the input exists and decodes (its first rows), and ``--out``
    is a file that can be written (never an existing folder). Raises one ConfigError listing every problem."""
    problems = data_problems(source, "INPUT", (), "the conversion")
    if out is not None:
        problems += output_file_problems(out, "--out")
    raise_problems(problems)


def check_plan_config(path: str | os.PathLike, model: str | None = None) -> None:
    """``rlhfkit plan --config``: the config's values, checked as ``rlhfkit run`` (a pipeline config: one with a
    ``model:`` section) or the recipes (a ``configs/<model>/<stage>.yaml``) check them; data, model folders and the
    output folder are not needed to plan memory and are not checked."""
    raw = read_yaml(path)
    if isinstance(raw.get("model"), dict):
        check_pipeline(raw, {"model.model_name_or_path": model} if model else None, sources=False)
        return
    trainer = raw.get("stage", Path(path).stem)
    if trainer not in TRAINER_CONFIGS:
        return  # the planner names the stage it needs
    problems = []
    for cls in (ModelArguments, DataArguments, TRAINER_CONFIGS[trainer], MonitorConfig):
        names = {f.name for f in dataclasses.fields(cls)}
        problems += check_values(cls, {k: v for k, v in raw.items() if k in names})[1]
    raise_problems(problems)


def _find(parsed: Sequence[Any], cls: type) -> Any:
    return next((p for p in parsed if isinstance(p, cls)), None)


def check_recipe(trainer: str, parsed: Sequence[Any]) -> None:
    """Check a recipe's data, models and output folder before it starts (its values were checked by
    :func:`rlhfkit.config.parse_recipe`); raises one :class:`ConfigError` listing every problem."""
    model, data, training = _find(parsed, ModelArguments), _find(parsed, DataArguments), parsed[-1]
    remote = bool(getattr(training, "trust_remote_code", False))
    problems = []
    if model is not None:
        problems += model_problems(
            model.model_name_or_path, "model_name_or_path", revision=model.model_revision, trust_remote_code=remote
        )
    if data is not None:
        if trainer == "sft":
            problems += data_problems(data.dataset, "dataset", SFT_COLUMNS, "SFT", data.dataset_split)
        elif trainer in ("reward", "dpo"):  # DPO trains on the preference pairs
            problems += preference_problems(data.dataset, "dataset", data.dataset_format, data.dataset_split)
        else:
            problems += data_problems(data.dataset, "dataset", PROMPT_COLUMNS, trainer.upper(), data.dataset_split)
    for args in parsed:
        if isinstance(getattr(args, "reward_model_path", None), str):
            problems += model_problems(
                args.reward_model_path, "reward_model_path", reward=True, trust_remote_code=remote
            )
    problems += output_dir_problems(training.output_dir, "output_dir", run=False)
    raise_problems(problems)


def run_recipe(main: Callable[..., Any], trainer: str, dataclass_types: tuple, argv: list[str] | None = None) -> int:
    """A recipe's entry point: parse (:func:`rlhfkit.config.parse_recipe`), check (:func:`check_recipe`) and run
    ``main(*parsed)`` through the one error path: a user error prints ``error:`` lines and returns 2 (``--debug``:
    the traceback). Returns the exit code."""
    argv, debug = pop_debug(list(sys.argv[1:] if argv is None else argv))

    def go() -> None:
        parsed = parse_recipe(trainer, dataclass_types, argv)
        check_recipe(trainer, parsed)
        main(*parsed)

    return run_guarded(go, debug)


__all__ = [
    "check_pipeline",
    "check_plan_config",
    "check_preference_file",
    "check_recipe",
    "data_problems",
    "model_problems",
    "output_dir_problems",
    "output_file_problems",
    "preference_problems",
    "run_recipe",
]
