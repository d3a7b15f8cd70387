"""bopkd: from a BOP dataset to a BOP-scored comparison of knowledge-distillation methods for 6D pose."""

__version__ = "0.1.0"
