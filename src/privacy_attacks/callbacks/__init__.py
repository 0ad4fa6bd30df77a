from privacy_attacks.callbacks.sweep_summary import SweepSummary, best_row, collect_rows

__all__ = ["SweepSummary", "best_row", "collect_rows"]
