"""Training: typed run configs (``config``, ``presets``), the ``bopkd train`` command (``command``), the
trainer loop (``trainer``) and its hooks (``hooks``: schedule, non-finite check, timing, progress,
metrics, checkpoints), the loss callables (``loss_fns``), networks (``networks``), the resumable
sampler (``sampler``), devices, seeds, optimisers, checkpoints, metrics files and DDP."""
