#!/usr/bin/env bash
# Create ./.venv and install the toolkit's pinned dependencies; `--dev` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps -r requirements-nodeps.txt 2>&1 | grep -v "requires llm" || true
if [ "${1:-}" = "--dev" ]; then
  "${pip[@]}" -r requirements-dev.txt
fi
