"""Upstream credentials: one module per credential type."""
