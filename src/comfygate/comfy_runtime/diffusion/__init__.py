"""Diffusion models for the built-in nodes: model files, the warm model pool, loaders, sampling."""
