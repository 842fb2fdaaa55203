"""harness: walk-forward backtesting of learning-rate decay schedules."""
