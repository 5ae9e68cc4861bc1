"""Registered model presets (filled in by the model-adapter work)."""
