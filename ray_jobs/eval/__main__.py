"""``python -m ray_jobs.eval``: the same options as ``iqa eval``."""

import sys

from ray_jobs.eval.job import main

sys.exit(main())
