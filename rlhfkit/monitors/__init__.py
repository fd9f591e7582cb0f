"""KL-health and reward-hacking monitors for the RL stages: plain ``TrainerCallback``s, always on.

* :mod:`rlhfkit.monitors.config` -- :class:`MonitorConfig` and the signals' vocabulary;
* :mod:`rlhfkit.monitors.health` -- :class:`HealthMonitor` (the signals' conditions, alerts, stop),
  :func:`build_monitors`;
* :mod:`rlhfkit.monitors.frozen` -- :class:`FrozenModelCheck`: the reference and reward models stay bit-identical;
* :mod:`rlhfkit.monitors.plots` -- the ``health.jsonl`` timeline, a rich table, and the plots;
* :mod:`rlhfkit.monitors.progress` -- what every training run shows on the console (:func:`show_progress`): one
  progress bar with its few numbers (for RL the monitors'), then one result line.
"""

from rlhfkit.monitors.config import SIGNALS, MonitorConfig
from rlhfkit.monitors.frozen import (
    FrozenModelCheck,
    FrozenModelError,
    frozen_models,
    verify_frozen,
    weights_fingerprint,
)
from rlhfkit.monitors.health import Alert, HealthMonitor, build_monitors, read_metrics
from rlhfkit.monitors.plots import health_table, load_timeline, plot_health

__all__ = [
    "SIGNALS",
    "Alert",
    "FrozenModelCheck",
    "FrozenModelError",
    "HealthMonitor",
    "MonitorConfig",
    "build_monitors",
    "weights_fingerprint",
    "frozen_models",
    "health_table",
    "load_timeline",
    "plot_health",
    "read_metrics",
    "verify_frozen",
]
