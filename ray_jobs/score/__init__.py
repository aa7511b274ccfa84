"""The scoring job: listing -> fetch + decode -> scoring actors -> Parquet (``iqa score``)."""
