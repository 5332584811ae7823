"""Canary rollouts: the phase machine, the statistical judge and the rollout plan (pure modules)."""
