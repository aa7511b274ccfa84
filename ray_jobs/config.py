"""The one job-config base: a pydantic model, loaded from YAML (any fsspec path) with CLI flags on top.

Every setting of a job is written once, as a field of a :class:`JobConfig` subclass; the ``iqa`` flags
are derived from the fields::

    class ScoreJobConfig(JobConfig):
        job_name: ClassVar[str] = "score job"
        src: str = Field(description="...", json_schema_extra=cli(positional=True))
        batch_size: int | None = Field(default=None, ge=1, description="images per forward pass")
        report: bool = Field(default=True, description="write the HTML report")

gives ``iqa score SRC --batch-size N --report/--no-report``. The rules: ``name_with_underscores`` ->
``--name-with-underscores``; the type gives the argument type; ``bool`` -> ``--x/--no-x``; ``Literal`` ->
choices; a list or tuple of scalars -> several values; dicts and nested models are set in the YAML file
only. ``Field(description=...)`` becomes the help. :func:`cli` tweaks one field's flag (positional, a
different flag name, aliases, a mutually exclusive group).

Precedence: defaults < ``--config job.yaml`` < flags. Unknown keys are refused with the close matches,
and validation problems become one line each (:class:`ray_jobs.errors.UserError`).
"""

from __future__ import annotations

import argparse
import difflib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticUndefined
from typing_extensions import Self  # typing.Self is 3.11+; requires-python is >=3.10

# The one default pixel limit of every job (decompression-bomb guard) is the decoder's own, from a plugin
# module that imports neither torch nor pyiqa, so the drivers stay light.
from iqa_plugin.data.image_checks import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from ray_jobs.errors import UserError

_SCALARS = (str, int, float)


def cli(*, positional: bool = False, flag: str | None = None, aliases: tuple[str, ...] = (),
        exclusive: str | None = None, metavar: str | None = None) -> dict[str, Any]:
    """``json_schema_extra`` of a field whose flag differs from the derived one.

    Args:
        positional: an optional positional argument instead of a flag (``iqa score SRC``).
        flag: the flag instead of ``--name-with-dashes``.
        aliases: further flags for the same field (old names kept working).
        exclusive: fields sharing this group name are mutually exclusive on the command line.
        metavar: the placeholder shown in the help.
    """
    return {"cli": {"positional": positional, "flag": flag, "aliases": tuple(aliases), "exclusive": exclusive,
                    "metavar": metavar}}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a YAML job file at any fsspec path.

    Raises:
        UserError: the file is missing, is not YAML, or does not hold a mapping.
    """
    import yaml

    from ray_jobs.runtime import filesystem_for

    fs, inner = filesystem_for(str(path))
    if not fs.exists(inner):
        raise UserError(f"--config {path}: file not found; give the path of a YAML job file")
    try:
        with fs.open(inner, "r") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise UserError(f"--config {path}: not valid YAML{line} ({getattr(error, 'problem', error)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value, got {type(data).__name__}")
    return data


class JobConfig(BaseModel):
    """Base of every job config: unknown keys rejected, CLI flags derived from the fields.

    Subclasses set :attr:`job_name` (used in messages) and, for mutually exclusive fields that must be
    given once on the command line, :attr:`cli_required_groups`.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    job_name: ClassVar[str] = "job"
    cli_required_groups: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, yaml_path: str | Path | None = None, **overrides: Any) -> Self:
        """A validated config from an optional YAML file plus ``overrides`` (``None`` values ignored).

        Raises:
            UserError: the file or a value is invalid; one line per problem, naming the key.
        """
        values: dict[str, Any] = load_yaml(yaml_path) if yaml_path else {}
        values.update({key: value for key, value in overrides.items() if value is not None})
        try:
            return cls(**values)
        except ValidationError as error:
            raise UserError("\n".join(cls._problems(error, yaml_path))) from None

    @classmethod
    def _problems(cls, error: ValidationError, yaml_path: str | Path | None) -> list[str]:
        where = f" in {yaml_path}" if yaml_path else ""
        lines = []
        for item in error.errors():
            loc = ".".join(str(part) for part in item["loc"]) or "config"
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message += " (unknown key" + cls._suggestion(item["loc"]) + ")"
            lines.append(f"invalid {cls.job_name} config{where}: {loc}: {message}")
        return lines

    @classmethod
    def _suggestion(cls, loc: tuple[Any, ...]) -> str:
        model: Any = cls
        for part in loc[:-1]:  # walk into nested models to suggest their own fields
            field = getattr(model, "model_fields", {}).get(part)
            model = _unwrap_optional(field.annotation) if field is not None else None
        known = list(getattr(model, "model_fields", {}))
        close = difflib.get_close_matches(str(loc[-1]), known, n=3, cutoff=0.6)
        return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else f"; known keys: {', '.join(known)}"

    # ------------------------------------------------------------------------------------- command line

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one flag per field to ``parser`` (whose ``argument_default`` must be ``SUPPRESS``)."""
        groups: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            spec = cls._cli_spec(name)
            kwargs = _argument_kwargs(field.annotation)
            if kwargs is None:
                continue  # dicts and nested models: YAML only
            help_text = field.description or name.replace("_", " ")
            if field.is_required():
                help_text += " (required, here or in --config)"
            elif field.default is not PydanticUndefined and field.default is not None \
                    and kwargs.get("action") is not argparse.BooleanOptionalAction:
                help_text += f" (default: {_show(field.default)})"
            kwargs["help"] = help_text.replace("%", "%%")
            if spec.get("metavar"):
                kwargs["metavar"] = spec["metavar"]
            target: Any = parser
            if spec.get("exclusive"):
                group = spec["exclusive"]
                if group not in groups:
                    groups[group] = parser.add_mutually_exclusive_group(required=group in cls.cli_required_groups)
                target = groups[group]
            if spec.get("positional"):
                # an absent optional positional takes its default, which argparse checks against the choices:
                # None (dropped by values_from_args) instead of SUPPRESS, which is no choice
                default = {"default": None} if "choices" in kwargs else {}
                target.add_argument(name, nargs="?", **{k: v for k, v in kwargs.items() if k != "nargs"}, **default)
            else:
                flags = [spec.get("flag") or "--" + name.replace("_", "-"), *spec.get("aliases", ())]
                target.add_argument(*flags, dest=name, **kwargs)

    @classmethod
    def _cli_spec(cls, name: str) -> dict[str, Any]:
        extra = cls.model_fields[name].json_schema_extra
        spec = extra.get("cli") if isinstance(extra, dict) else None
        return dict(spec) if isinstance(spec, dict) else {}

    @classmethod
    def values_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        """The field values given on the command line (flags not given are absent)."""
        given = vars(args)
        return {name: given[name] for name in cls.model_fields
                if name in given and given[name] is not argparse.SUPPRESS and given[name] is not None}


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def _unwrap_optional(annotation: Any) -> Any:
    """``X`` for ``X | None`` / ``Optional[X]``; the annotation itself otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _argument_kwargs(annotation: Any) -> dict[str, Any] | None:
    """argparse keyword arguments for a field type, or None when the field is YAML-only."""
    annotation = _unwrap_optional(annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in _SCALARS:
        return {"type": annotation}
    if origin is Literal:
        choices = typing.get_args(annotation)
        return {"type": type(choices[0]), "choices": list(choices)}
    if origin in (list, tuple):
        items = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(set(items)) == 1 and items[0] in _SCALARS:
            return {"type": items[0], "nargs": "+"}
    return None
