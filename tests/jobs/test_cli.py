"""The one job-config base and the one ``iqa`` wrapper: flags derived from the configs, YAML under
flags, one-line user errors (exit 2), job failures (exit 1), Ctrl-C (130), secrets redacted."""

from __future__ import annotations

import argparse
import sys
import types
from typing import ClassVar, Literal

import pytest
from pydantic import Field

from ray_jobs import cli
from ray_jobs.config import DEFAULT_MAX_PIXELS, JobConfig
from ray_jobs.errors import UserError

SECRET = "Sup3rSecretValue-do-not-print"


class DemoConfig(JobConfig):
    job_name: ClassVar[str] = "demo job"

    src: str = Field(description="where from")
    batch_size: int = Field(default=4, ge=1, description="images per batch")
    dtype: Literal["fp32", "bf16"] = Field(default="fp32", description="precision")
    report: bool = Field(default=True, description="write the report")
    tags: tuple[str, ...] = Field(default=(), description="labels")
    resources: dict[str, float] = Field(default_factory=dict, description="yaml only")
    behaviour: str = Field(default="ok", description="what run() does (test hook)")


def _run(config: DemoConfig) -> int:
    if config.behaviour == "fail":
        raise RuntimeError(f"ray::Worker died\nTraceback ...\nOSError: disk full (token {SECRET})")
    if config.behaviour == "interrupt":
        raise KeyboardInterrupt
    if config.behaviour == "user":
        raise UserError(f"{config.src}: not found; check SRC (key {SECRET})")
    print(f"ran {config.model_dump_json()}")
    return 0


@pytest.fixture
def demo_job(monkeypatch):
    module = types.ModuleType("tests_demo_job")
    module.CONFIG = DemoConfig
    module.run = _run
    monkeypatch.setitem(sys.modules, "tests_demo_job", module)
    monkeypatch.setitem(cli.COMMANDS, "demo", ("tests_demo_job", "a demo job"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    return module


def test_flags_are_derived_from_the_fields(demo_job, capsys):
    parser = cli.build_parser("demo")
    args = parser.parse_args(["--src", "a", "--batch-size", "8", "--no-report", "--tags", "x", "y"])
    assert DemoConfig.values_from_args(args) == {"src": "a", "batch_size": 8, "report": False, "tags": ["x", "y"]}
    help_text = parser.format_help()
    assert "images per batch (default: 4)" in help_text and "--report, --no-report" in help_text
    assert "--resources" not in help_text  # dicts are YAML-only
    with pytest.raises(SystemExit) as bad_choice:
        parser.parse_args(["--dtype", "fp64"])
    assert bad_choice.value.code == 2 and "invalid choice: 'fp64'" in capsys.readouterr().err


def test_flags_win_over_yaml(demo_job, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("src: from-yaml\nbatch_size: 2\nreport: false\nresources: {scorer: 1}\n")
    assert cli.job_main("demo", ["--config", str(job), "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert '"src":"from-yaml"' in out and '"batch_size":16' in out and '"report":false' in out
    assert '"resources":{"scorer":1.0}' in out


def test_unknown_yaml_key_is_one_line_naming_it_and_the_close_match(demo_job, tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("src: a\nbatch_sise: 2\ndtype: fp64\n")
    assert cli.job_main("demo", ["--config", str(job)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert "batch_sise: Extra inputs are not permitted (unknown key; did you mean 'batch_size'?)" in err
    assert "dtype: Input should be 'fp32' or 'bf16'" in err
    assert all(line.startswith(f"iqa demo: error: invalid demo job config in {job}: ") for line in lines)
    job.write_text("- not\n- a mapping\n")
    assert cli.job_main("demo", ["--config", str(job)]) == 2
    assert "expected a mapping of option: value, got list" in capsys.readouterr().err
    assert cli.job_main("demo", ["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in capsys.readouterr().err


@pytest.mark.parametrize(("behaviour", "code", "message"), [
    ("user", 2, "iqa demo: error: a: not found; check SRC (key ***)"),
    ("fail", 1, "iqa demo: error: job failed: RuntimeError: OSError: disk full (token ***)"),
    ("interrupt", 130, "iqa demo: interrupted; run the same command again to resume"),
])
def test_exit_codes_and_redaction(demo_job, capsys, behaviour, code, message):
    assert cli.job_main("demo", ["--src", "a", "--behaviour", behaviour]) == code
    captured = capsys.readouterr()
    assert captured.err.strip() == message
    assert SECRET not in captured.out + captured.err and "Traceback" not in captured.err


def test_every_job_config_field_is_a_flag_or_yaml_only():
    """Each setting is declared once; the parser of every command carries it."""
    for command in cli.COMMANDS:
        module = cli.load_job(command)
        parser = cli.build_parser(command)
        dests = {action.dest for action in parser._actions}
        for name, field in module.CONFIG.model_fields.items():
            yaml_only = field.annotation is not None and "dict" in str(field.annotation)
            assert (name in dests) != yaml_only, (command, name)
        assert issubclass(module.CONFIG, JobConfig) and callable(module.run)


def test_one_pixel_limit_default_everywhere():
    from iqa_plugin.data.images import DEFAULT_MAX_PIXELS as DECODER_DEFAULT
    from ray_jobs.score.config import ScoreJobConfig
    from ray_jobs.shards.config import ShardsJobConfig

    assert DEFAULT_MAX_PIXELS == DECODER_DEFAULT
    assert ScoreJobConfig(src="a", out="b").max_pixels == DEFAULT_MAX_PIXELS
    assert ShardsJobConfig(source="a", out="b", kind="sr").max_pixels == DEFAULT_MAX_PIXELS


def test_missing_required_value_is_a_user_error_not_an_argparse_dump(capsys):
    assert cli.job_main("score", ["--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "iqa score: error: invalid score job config: src: Field required"


def test_namespace_without_flags_gives_no_values():
    assert DemoConfig.values_from_args(argparse.Namespace()) == {}
