"""Comparison reports: one table row per model, figures, and Markdown/CSV/LaTeX/HTML outputs."""
