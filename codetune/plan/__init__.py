"""Plan a training run before loading any weights: peak GPU memory, time, and what to change.

The math lives in pure modules (shapes, memory, throughput, recommend, gpus) that import neither torch
nor pydantic, so bench scripts can use them anywhere; `run` ties them to a Config.
"""
