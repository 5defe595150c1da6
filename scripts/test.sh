#!/usr/bin/env bash
# The whole test suite, from a fresh clone: makes .venv/, installs the pack with its test
# extras, installs headless Chromium for the browser test (Debian packages), checks the
# formatting and lint (ruff), then runs pytest, including the real-ComfyUI-server and
# browser tests (tests/host; their first run sets up current upstream ComfyUI under
# .comfy/, from COMFYUI_SRC or ../shared/comfyui/).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
      || echo "warning: could not install chromium; the browser tests will fail" >&2
  else
    echo "warning: chromium/chromedriver missing and not root; the browser tests will fail" >&2
  fi
fi

# The formatter and linter first (pyproject.toml [tool.ruff]): a style slip fails in seconds.
.venv/bin/python -m ruff format --check --quiet . || { echo "ruff format would change the files above; run: .venv/bin/python -m ruff format ." >&2; exit 1; }
.venv/bin/python -m ruff check --quiet .

exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
