"""Model cards, weights resolution (fetch, verify, cache) and checkpoint loading."""
