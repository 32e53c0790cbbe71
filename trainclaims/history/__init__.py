"""A history of every run: claims and benchmarks over commits, torch releases and machines.

- :mod:`.store`: the history folder (``record_run``, ``load``): one file per run, written whole;
- :mod:`.steps`: the steps in a series, told from its noise by each point's spread (``detect_steps``);
- :mod:`.noise`: each benchmark's noise and the gate's false alarms it implies (``benchmark_noise``);
- :mod:`.series`: the history as series (verdicts, evidence numbers, benchmarks);
- :mod:`.site`: a static site that opens from disk (``write_site``);
- :mod:`.comment`: a pull-request comment comparing two runs (``pr_comment``);
- ``python -m trainclaims.history add|site|comment|runs`` (:mod:`.__main__`).

Nothing here imports pytest or the plugin: the history is read where only the reports are.
"""

from trainclaims.history.steps import Fit, LevelChange, detect_steps
from trainclaims.history.store import History, Run, check_folder, load, record_run

__all__ = ["Fit", "History", "LevelChange", "Run", "check_folder", "detect_steps", "load", "record_run"]
