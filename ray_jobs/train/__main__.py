"""``python -m ray_jobs.train RECIPE ...``: the same options as ``iqa train``."""

import sys

from ray_jobs.train.job import main

sys.exit(main())
