"""Shared vocabulary of every layer: request context, usage, errors."""
