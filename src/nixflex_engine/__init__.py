"""nixflex-engine: AI phone calls over a low-latency frame pipeline."""

__version__ = "0.1.0"
