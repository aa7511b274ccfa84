"""Per-recipe training step logic, Ray-free."""
