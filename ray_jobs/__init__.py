"""Distributed jobs (Ray) and the ``iqa`` command. Each job is runnable as ``python -m ray_jobs.<job>``."""
