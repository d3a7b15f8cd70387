"""Evaluation: BOP result files, pose errors and BOP scores."""
