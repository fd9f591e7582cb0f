"""rlhfkit: InstructGPT-style RLHF (SFT -> reward model -> PPO/GRPO) over Hugging Face TRL.

Importing ``rlhfkit`` is cheap (no torch); import the submodules you need:
``rlhfkit.presets``, ``rlhfkit.models``, ``rlhfkit.lab``, ``rlhfkit.data``, ``rlhfkit.data.agreement``,
``rlhfkit.rm_eval``, ``rlhfkit.ppo``, ``rlhfkit.train``, ``rlhfkit.monitors``, ``rlhfkit.pipeline``.
"""

__version__ = "0.1.0"


def lazy_exports(package: str, exports: dict[str, str]):
    """A package's module ``__getattr__`` (PEP 562) that imports ``exports[name]`` (a submodule) on first use of
    ``name``: so importing one light submodule of a package (``rlhfkit.pipeline.config``, ``rlhfkit.ppo.config``,
    what ``rlhfkit run --check`` needs) does not import its heavy siblings (the stages, the trainers)."""
    import importlib

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
