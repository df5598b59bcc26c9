"""An example model plugin for realtime-ml (see model.py)."""
