"""The shards job: pristine images -> lossless crops + degradation recipes as Parquet shards (``iqa shards``)."""
