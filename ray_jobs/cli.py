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
    "score": ("ray_jobs.score.job", "score an image collection (folder, s3:// prefix or manifest) with Ray"),
    "curate": ("ray_jobs.curate", "keep the best-scored images from a score job's output"),
    "report": ("ray_jobs.report", "write the HTML report of a score job's output"),
    "shards": ("ray_jobs.shards.job", "build degradation shards for training from pristine images"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="iqa",
        usage="iqa COMMAND [options]   (iqa COMMAND --help for its options)",
        description=f"iqa-plugin: CLIP-based image quality at scale.\n\ncommands:\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _load_job(name: str):
    """Import only the chosen job's module, so `iqa models` works without Ray installed."""
    module_name = COMMANDS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name in ("ray", "s3fs", "pyarrow", "pandas"):
            raise SystemExit(
                f"iqa {name}: needs the optional package {error.name!r}, which is not installed. "
                "Fix: pip install 'iqa-plugin[all]'."
            ) from None
        raise


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one sub-command (``iqa <command> ...``)."""
    module = _load_job(command)
    parser = argparse.ArgumentParser(prog=f"iqa {command}", description=COMMANDS[command][1])
    module.configure_parser(parser)
    parser.set_defaults(_run=module.run_from_args)
    return parser


def job_main(command: str, argv: list[str] | None = None) -> int:
    """Run one job with ``argv`` (default ``sys.argv[1:]``): ``python -m ray_jobs.<job>`` == ``iqa <job>``."""
    args = build_parser(command).parse_args(argv)
    return int(args._run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            top.print_usage(sys.stderr)
            print(f"iqa: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        top.print_help()
        return 0 if argv else 2
    return job_main(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
