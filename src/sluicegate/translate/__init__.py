"""Translators: one module per (client API x backend schema) pair, named <api>_<schema>.py."""
