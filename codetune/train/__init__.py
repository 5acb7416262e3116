"""The training flow: `codetune train` (run.py), checkpoints, callbacks, export and model card."""
