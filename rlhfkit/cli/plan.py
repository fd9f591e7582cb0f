"""``rlhfkit plan``: the memory plan of a training run on a GPU, from a model and stage or from a config file (exit 1
when it does not fit)."""

from __future__ import annotations

import argparse
import json

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.presets import METHODS, TRAINERS
from rlhfkit.planner import GIB, plan, plan_config
from rlhfkit.planner.plans import LAYOUTS


# ------------------------------------------------------------------------------------------ plan
def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="memory plan of a model x stage x preset on a GPU; fixes if it won't fit (exit 1)")
    p.add_argument("--model", help="hub id (offline table or HF cache) or local model folder")
    p.add_argument("--stage", choices=TRAINERS)
    p.add_argument(
        "--config",
        help="plan a recipe config (configs/<model>/<stage>.yaml) or a pipeline config (every training stage) "
        "with its preset, GPU and batch / length fields; --model replaces its model (e.g. the hub id of runs/.../sft)",
    )
    p.add_argument("--preset", default="qlora", choices=METHODS, help="method (default qlora)")
    p.add_argument("--gpu", type=float, default=24, help="GPU memory in GB (default 24)")
    p.add_argument("--layout", choices=LAYOUTS, help="PPO: separate models or one shared base")
    p.add_argument("--reward-members", type=int, default=1, help="RL stages: reward models of an ensemble (default 1)")
    p.add_argument("--batch-size", type=int, help="per_device_train_batch_size (default: the GPU preset's)")
    p.add_argument("--grad-accum", type=int, help="gradient_accumulation_steps (default: the GPU preset's)")
    p.add_argument("--seq-len", type=int, help="max_length (sft, reward) or response length (RL); default: preset's")
    p.add_argument("--prompt-length", type=int, help="RL stages: prompt tokens (default 256)")
    p.add_argument("--num-generations", type=int, help="GRPO: completions per prompt")
    ckpt = p.add_mutually_exclusive_group()
    ckpt.add_argument("--checkpointing", dest="gradient_checkpointing", action="store_true", default=None)
    ckpt.add_argument("--no-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    if args.config:
        from rlhfkit.pipeline.validate import check_plan_config  # the config's values, checked as run / the recipes do

        check_plan_config(args.config, args.model)
        plans = list(plan_config(args.config, args.model).values())
    elif args.model and args.stage:
        names = ("layout", "reward_members", "batch_size", "grad_accum", "seq_len", "prompt_length")
        kwargs = {n: getattr(args, n) for n in (*names, "num_generations", "gradient_checkpointing")}
        plans = [plan(args.model, args.stage, args.preset, args.gpu, **kwargs)]
    else:
        raise ConfigError("rlhfkit plan needs --model and --stage (or --config FILE)")
    if args.json:
        out = [p.to_dict() for p in plans] if args.config else plans[0].to_dict()
        print(json.dumps(out, indent=2, default=str))
    else:
        for p in plans:
            print_plan(p)
    return 0 if all(p.verdict != "does not fit" for p in plans) else 1


def print_plan(result) -> None:
    """Print a :class:`rlhfkit.planner.Plan`: the memory breakdown, settings, notes, verdict and fixes."""
    from rich.console import Console
    from rich.table import Table

    def gb(n: int) -> str:
        return f"{n / GIB:.2f}"

    s = result.settings
    title = f"{result.model} · {result.trainer} · {result.preset} · {result.gpu_gb:g} GB"
    if s.get("layout"):
        title += f" · {s['layout']} layout"
    table = Table(title=title)
    table.add_column("memory")
    table.add_column("GiB", justify="right")
    ckpt = s["gradient_checkpointing"]
    for key, b in result.breakdown.items():
        label = key.replace("_", " ")
        if key == "activations":
            other = result.activations_full if ckpt else result.activations_checkpointed
            label += f" (checkpointing {'on' if ckpt else 'off'}; {'off' if ckpt else 'on'}: {gb(other)})"
        table.add_row(label, gb(b))
        if key == "weights" and len(result.copies) > 1:
            for name, copy_bytes in result.copies:
                table.add_row(f"  {name}", gb(copy_bytes), style="dim")
    table.add_row("total", gb(result.total_bytes), style="bold")
    table.add_row("GPU", gb(result.capacity_bytes))
    console = Console()
    console.print(table)
    shown = {k: v for k, v in s.items() if v is not None and k not in ("fused_lm_head", "precision")}
    console.print("settings: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    for note in result.notes:
        console.print(f"note: {note}")
    colour = {"fits": "green", "tight": "yellow"}.get(result.verdict, "red")
    console.print(
        f"verdict: [{colour}]{result.verdict}[/] ({result.total_bytes / result.capacity_bytes:.0%} of the GPU)"
    )
    for sug in result.suggestions:
        console.print(f"  fix: {sug.change}  -> {gb(sug.total_bytes)} GiB ({sug.verdict})")
