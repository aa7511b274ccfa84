"""``python -m ray_jobs.shards``: the same options as ``iqa shards``."""

import sys

from ray_jobs.shards.job import main

sys.exit(main())
