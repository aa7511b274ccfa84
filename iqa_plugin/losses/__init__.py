"""Training losses (pure torch)."""
