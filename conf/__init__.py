"""The Hydra config tree (`python -m runner --help` lists its groups and options)."""
