"""``python -m ray_jobs.score``: the same options as ``iqa score``."""

import sys

from ray_jobs.score.job import main

sys.exit(main())
