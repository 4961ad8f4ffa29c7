"""A declarative, resumable batch runner for AI video generation across providers."""

__version__ = "0.1.0"
