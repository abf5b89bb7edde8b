#!/bin/sh
# Build llama.cpp's own server binary, `llama-server`, from the llama.cpp that the installed
# llama-cpp-python vendors (its source distribution, from the package index: no other network),
# once per version: the binary is kept in a cache directory and its path printed on stdout.
#
#   sh tests/inference/build_llama_server.sh [PYTHON]
#
# For this machine's CPU (GGML_NATIVE), no GPU, no web UI (it would be fetched from a model
# hub), no HTTPS, no curl: one static binary. About 6 minutes on 2 cores. Progress: stderr.
set -eu
python=${1:-python3}
version=$("$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
cache=${RHAPSODY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rhapsody}/llama-server-$version
if [ -x "$cache/llama-server" ]; then
    echo "$cache/llama-server"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "build_llama_server: building llama-server of llama-cpp-python $version in $work" >&2
"$python" -m pip download --quiet --no-deps --no-binary :all: -d "$work" \
    "llama-cpp-python==$version" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
source=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
cmake -S "$source" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF >&2
cmake --build "$work/build" --target llama-server --parallel "$(nproc)" >&2
mkdir -p "$cache"
# into place in one step: a concurrent build or a reader never sees half a binary
cp "$work/build/bin/llama-server" "$cache/llama-server.$$"
mv "$cache/llama-server.$$" "$cache/llama-server"
echo "$cache/llama-server"
