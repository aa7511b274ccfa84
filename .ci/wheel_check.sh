#!/usr/bin/env bash
# Build the wheel, install it in a fresh venv (torch from this machine's disk) and run `iqa models`.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python -m pip wheel --no-deps -q -w "$work/dist" .
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$work/venv/bin/pip" install -q "$work"/dist/iqa_plugin-*.whl
cd "$work"
"$work/venv/bin/iqa" models
# installed is enough: a script that imports only pyiqa sees the plugin (the wheel's .pth arms the hook)
"$work/venv/bin/python" -c "import sys, pyiqa; from pyiqa.default_model_configs import DEFAULT_CONFIGS; assert DEFAULT_CONFIGS['qualiclip']['metric_opts']['type'] == 'IqaPluginQualiCLIP'; print('wheel ok:', sys.modules['iqa_plugin'].__file__)"
