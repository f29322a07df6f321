"""Training: `TrainConfig` (config.py), the pretraining loop (loop.py), checkpoints (checkpoint.py), weights in/out
(weights.py), metrics (metrics.py), process-group helpers (distributed.py), batch sources (sources.py, data.py)."""
