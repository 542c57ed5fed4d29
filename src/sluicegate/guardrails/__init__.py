"""Guardrails: detectors of personal data and secrets, rules that block, redact or log, moderation."""
