"""Reports that consume evaluations: models side by side, and the user's own leaderboard.

``compare`` places evaluation reports on accuracy/robustness plots (``multirobust compare``);
``leaderboard`` keeps every recorded evaluation in a local SQLite database (``multirobust
leaderboard``, ``multirobust evaluate --db``). This package sits above ``evaluation``: it reads
``EvaluationReport`` objects and nothing below imports it.
"""

from .compare import CompareError, Model, compare, load_models, load_report, pareto_front
from .leaderboard import Entry, Leaderboard, LeaderboardError, default_path, format_table

__all__ = [
    "CompareError",
    "Entry",
    "Leaderboard",
    "LeaderboardError",
    "Model",
    "compare",
    "default_path",
    "format_table",
    "load_models",
    "load_report",
    "pareto_front",
]
