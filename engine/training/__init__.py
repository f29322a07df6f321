"""Pretraining: the `Trainer` (trainer.py), one or two phases and the process exit (phases.py), checkpoints
(checkpoint.py), weights in and out of them (weights.py), metrics and progress (metrics.py), profiling (profile.py),
device masking (device_masking.py), seeds and random state (rng.py), process-group helpers (distributed.py)."""
