"""Metrics, curves, the HTML report, the leaderboard, the run registry and the regression gate."""
