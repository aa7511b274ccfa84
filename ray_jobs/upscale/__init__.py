"""``iqa upscale``: super-resolution of an image collection with Ray Data."""
