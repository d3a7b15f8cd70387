"""Training: typed run configs, the trainer (checkpoints, resume, DDP), and inference with BOP CSV export."""
