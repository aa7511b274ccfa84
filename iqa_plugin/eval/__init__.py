"""Correlation statistics and MOS dataset readers."""
