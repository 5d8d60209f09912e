#!/usr/bin/env bash
# The learner-parity benchmark (README.md beside this file): builds fengkong in release,
# installs scikit-learn in a virtual environment under target/, and runs parity.py on both
# data sets. Extra arguments go to parity.py (e.g. --payments 50000, --only cards).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${PARITY_WORK:-target/model_parity}
venv=${PARITY_VENV:-target/model_parity-venv}
mkdir -p "$work"
if [[ -z "${FENGKONG_BIN:-}" ]]; then
    cargo build --release --bin fengkong
    FENGKONG_BIN=target/release/fengkong
fi
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check scikit-learn
"$venv/bin/python" -c 'import sklearn; print("scikit-learn", sklearn.__version__)'
"$venv/bin/python" benches/model_parity/parity.py --bin "$FENGKONG_BIN" --work "$work" "$@" \
    | tee "$work/table.md"
