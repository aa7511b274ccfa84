"""Image decoding and validation, degradations, and shard materialisation."""
