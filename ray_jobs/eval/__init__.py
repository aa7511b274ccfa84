"""The evaluation job: agreement of metrics with human scores (``iqa eval``)."""
