"""The one Ray Train harness (checkpoint, resume, faults, report, export) and the training recipes."""
