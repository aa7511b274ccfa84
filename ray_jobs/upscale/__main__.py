"""``python -m ray_jobs.upscale``: the same options as ``iqa upscale``."""

import sys

from ray_jobs.upscale.job import main

sys.exit(main())
