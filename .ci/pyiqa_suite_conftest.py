"""Replaces tests/conftest.py of pyiqa's source distribution (see .ci/pyiqa_suite.sh).

pyiqa's own tests/test_metric_general.py is run unchanged, but restricted to the metrics served by
iqa-plugin (``pyiqa.list_models`` answers with those names while the test module is collected) and with
each of them pointed at fabricated checkpoints in the published layouts (``DEFAULT_CONFIGS`` edits,
which the plugin never overwrites). Nothing here imports iqa_plugin before pyiqa: the installed package
alone must have registered the plugin.
"""

import os
import tempfile

import pyiqa
import pytest
import torch
from pyiqa.default_model_configs import DEFAULT_CONFIGS

os.environ["IQA_PLUGIN_OFFLINE"] = "1"  # nothing may be downloaded

if DEFAULT_CONFIGS["qualiclip"]["metric_opts"]["type"] != "IqaPluginQualiCLIP":
    raise RuntimeError("pyiqa does not serve the plugin's qualiclip: is iqa-plugin installed in this environment?")

from iqa_plugin.archs import ARCHS  # noqa: E402
from iqa_plugin.testing import fabricated_weights_options  # noqa: E402

PLUGIN_METRICS = sorted(name for name, entry in DEFAULT_CONFIGS.items() if entry["metric_opts"]["type"] in ARCHS)
_ROOT = tempfile.mkdtemp(prefix="pyiqa-suite-weights-")
for _name in PLUGIN_METRICS:
    DEFAULT_CONFIGS[_name]["metric_opts"].update(fabricated_weights_options(_name, _ROOT))

_all_models = pyiqa.list_models
pyiqa.list_models = lambda *args, **kwargs: [m for m in _all_models(*args, **kwargs) if m in PLUGIN_METRICS]

CALIBRATION_SKIP = (
    "calibration compares scores with the published weights' official results: those weights cannot be "
    "downloaded here (fabricated weights give meaningless scores), and pyiqa's results_official.csv has no "
    f"row for the plugin's metrics ({', '.join(PLUGIN_METRICS)}); the parity test compares with pyiqa's own "
    "QualiCLIP instead"
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("calibration"):
            item.add_marker(pytest.mark.skip(reason=CALIBRATION_SKIP))


def pytest_report_header(config):
    return f"iqa-plugin metrics under test: {', '.join(PLUGIN_METRICS)}"


@pytest.fixture(scope="module")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
