"""What every other package stands on: errors and the one error path (``errors``, ``entry``), atomic files
(``io``), hardware -> precision (``hardware``), value rules of config fields (``rules``), method and GPU-size presets
(``presets``), recipe arguments and trainer configs (``arguments``), output-file checks (``checks``)."""
