"""Evaluate code models: execution tasks (humaneval, multipl-e:<lang>, humaneval-x:<lang>) scored by running
samples in a sandbox (sandbox.py, languages.py, failures.py, passk.py, score.py, tasks/)."""
