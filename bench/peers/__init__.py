"""The official SDKs' own usage, as standalone scripts run by the bench's virtualenv (.venv-bench)."""
