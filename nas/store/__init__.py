"""The store: one door to Optuna storage, studies, the study lock, heartbeats, trial attributes and latency tables."""
