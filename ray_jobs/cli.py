"""The ``iqa`` command: one sub-command per job module.

Each job module ``ray_jobs.<job>`` exposes ``configure_parser(parser)`` (adds its options) and
``run_from_args(args) -> int`` (the exit code), and its own ``main(argv=None)`` so that
``python -m ray_jobs.<job>`` takes the same options as ``iqa <job>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("ray_jobs.models", "list the registered models and their weights"),
    "score": ("ray_jobs.score", "score an image collection (folder, s3:// prefix or manifest) with Ray"),
    "curate": ("ray_jobs.curate", "keep the best-scored images from a score job's output"),
    "report": ("ray_jobs.report", "write the HTML report of a score job's output"),
    "shards": ("ray_jobs.shards", "build degradation shards for training from pristine images"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqa", description="iqa-plugin: CLIP-based image quality at scale.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # job not installed in this build
        job_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(job_parser)
        job_parser.set_defaults(_run=module.run_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
