"""Sluicegate: an AI gateway that speaks every model API and meters every token."""

__version__ = "0.1.0"
