"""Comparison reports: one row per model configuration (seeds aggregated, settings from each run's config),
statistics over seeds, one speed per architecture, figures, and Markdown/CSV/LaTeX/HTML outputs."""
