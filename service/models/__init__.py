"""Base models: the offline tiny base and its bundled corpus."""
