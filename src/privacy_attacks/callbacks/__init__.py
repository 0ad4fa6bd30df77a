from privacy_attacks.callbacks.progress import SweepProgress
from privacy_attacks.callbacks.sweep_check import SweepCheck
from privacy_attacks.callbacks.sweep_summary import SweepSummary, best_row, collect_rows

__all__ = ["SweepCheck", "SweepProgress", "SweepSummary", "best_row", "collect_rows"]
