#!/usr/bin/env bash
# pyiqa's own metric tests (tests/test_metric_general.py of the source distribution of the installed pyiqa
# version) against every metric iqa-plugin serves, with fabricated weights (.ci/pyiqa_suite_conftest.py).
# Uses $PYIQA_SDIST (a pyiqa-<version>.tar.gz) when set, else downloads it with pip. Extra arguments go
# to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(python -c "import importlib.metadata as m; print(m.version('pyiqa'))")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sdist=${PYIQA_SDIST:-}
if [ -z "$sdist" ]; then
  python -m pip download -q --no-binary :all: --no-deps "pyiqa==$version" -d "$work"
  sdist="$work/pyiqa-$version.tar.gz"
fi
tar xzf "$sdist" -C "$work"
src="$work/pyiqa-$version"
rm -rf "$src/pyiqa"  # test the installed pyiqa, into which the installed plugin registered, not a source copy
cp "$here/pyiqa_suite_conftest.py" "$src/tests/conftest.py"
cd "$src"
python -m pytest -q -rs -p no:cacheprovider tests/test_metric_general.py "$@"
