"""The ``iqa`` command: one table of jobs and one error / exit-code / redaction wrapper for all of them.

Interface for a job (``ray_jobs.<job>`` or ``ray_jobs.<job>.job``)::

    from typing import ClassVar
    from pydantic import Field
    from ray_jobs.config import JobConfig, cli
    from ray_jobs.errors import UserError          # one-line user errors (exit 2)
    from ray_jobs.runtime import ensure_ray        # join $RAY_ADDRESS or start a local Ray

    class TrainConfig(JobConfig):                  # every setting written once: flags derive from it
        job_name: ClassVar[str] = "train job"
        data: str = Field(description="shards folder or prefix", json_schema_extra=cli(positional=True))
        epochs: int = Field(default=10, ge=1, description="passes over the data")

    CONFIG = TrainConfig                           # required

    def run(config: TrainConfig) -> int:           # required: the exit code (0 done, 1 partly failed)
        with ensure_ray(min_cpus=2):
            ...
        return 0

    # optional: options that are not config fields, and how they turn into config values
    def configure_parser(parser: argparse.ArgumentParser) -> None: ...
    def prepare_values(args: argparse.Namespace, values: dict) -> dict: ...

    def main(argv: list[str] | None = None) -> int:   # python -m ray_jobs.<job> == iqa <job>
        return job_main("train", argv)

and one line in :data:`COMMANDS`. Every job accepts ``--config job.yaml`` (flags win over the file).

Exit codes of every ``iqa`` command and ``python -m ray_jobs.<job>``:

====  =====================================================================================
0     done (inputs that could not be processed are rows with a reason code, not failures)
1     the job failed, or finished with failures it reports (e.g. ``curate`` copies that failed)
2     a usage or user error (bad option or config, missing source, wrong credentials): one line
      per problem on stderr, no traceback, nothing started
130   interrupted (Ctrl-C); rerun the same command to resume
====  =====================================================================================

Every line printed by the wrapper has secret values (``*SECRET*``, ``*TOKEN*``, ... variables) redacted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from ray_jobs.errors import UserError, failure_line
from ray_jobs.runtime import redact

#: sub-command -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("ray_jobs.models", "list the registered models and their weights; add a card (iqa models add CARD)"),
    "score": ("ray_jobs.score.job", "score an image collection (folder, s3:// prefix or manifest) with Ray"),
    "curate": ("ray_jobs.curate", "keep the best-scored images from a score job's output"),
    "report": ("ray_jobs.report", "write the HTML report of a score job's output"),
    "upscale": ("ray_jobs.upscale.job", "super-resolve an image collection (folder, s3:// prefix or manifest) with Ray"),
    "shards": ("ray_jobs.shards.job", "build degradation shards for training from pristine images"),
    "train": ("ray_jobs.train.job", "train a recipe (qualiclip, sfd) on shards with Ray Train"),
    "eval": ("ray_jobs.eval.job", "correlation of metrics with human scores (SRCC/KRCC/PLCC) on a dataset or --synthetic"),
}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
_OPTIONAL_PACKAGES = ("ray", "s3fs", "pyarrow", "pandas")


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<8} {help_text}" for name, (_, help_text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="iqa",
        usage="iqa COMMAND [options]   (iqa COMMAND --help for its options)",
        description=f"iqa-plugin: CLIP-based image quality at scale.\n\ncommands:\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def load_job(command: str) -> ModuleType:
    """Import only the chosen job's module, so ``iqa models`` works without Ray installed."""
    try:
        return importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as error:
        if error.name in _OPTIONAL_PACKAGES:
            raise UserError(f"needs the optional package {error.name!r}, which is not installed. "
                            "Fix: pip install 'iqa-plugin[all]'.") from None
        raise


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UserError` (one line, exit 2) instead of printing its usage block."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message}; see {self.prog} --help")


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one sub-command: ``--config`` plus the flags derived from the job's config."""
    module = load_job(command)
    parser = _Parser(prog=f"iqa {command}", description=COMMANDS[command][1], argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="YAML",
                        help=f"YAML file of {module.CONFIG.__name__} fields (any fsspec path); flags win over it")
    module.CONFIG.add_arguments(parser)
    if hasattr(module, "configure_parser"):
        module.configure_parser(parser)
    return parser


def config_from_args(command: str, args: argparse.Namespace):
    """The validated job config of parsed ``args``: the ``--config`` file, then the flags given."""
    module = load_job(command)
    values = module.CONFIG.values_from_args(args)
    if hasattr(module, "prepare_values"):
        values = module.prepare_values(args, values)
    return module.CONFIG.load(getattr(args, "config", None), **values)


def job_main(command: str, argv: list[str] | None = None) -> int:
    """Run one job with ``argv`` (default ``sys.argv[1:]``) and return its exit code (see the table above).

    ``python -m ray_jobs.<job>`` and ``iqa <job>`` both end here.
    """
    prog = f"iqa {command}"
    try:
        args = build_parser(command).parse_args(argv)
        config = config_from_args(command, args)
        return int(load_job(command).run(config) or 0)
    except UserError as error:
        for line in str(error).splitlines() or [""]:
            print(f"{prog}: error: {redact(line)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the job itself failed: one line, no traceback, no secrets
        print(f"{prog}: error: job failed: {failure_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """``iqa COMMAND [options]``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        top = _top_parser()
        if argv and argv[0] not in ("-h", "--help"):
            top.print_usage(sys.stderr)
            print(f"iqa: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
            return EXIT_USAGE
        top.print_help()
        return EXIT_OK if argv else EXIT_USAGE
    return job_main(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
