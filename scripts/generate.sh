#!/usr/bin/env bash
# Regenerates generated/ from proto/: Python messages, type stubs, gRPC stubs and the
# descriptor set Envoy's transcoder reads. The output is committed.
# `--check` generates into a scratch folder and fails if the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=generated
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
rm -rf "$out/mplus"
mkdir -p "$out/mplus/v1"
"$python" -m grpc_tools.protoc -Iproto -Ithird_party \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/mplus/v1/*.proto
# Envoy needs every type it may print, including the error details our errors carry.
"$python" -m grpc_tools.protoc -Iproto -Ithird_party --include_imports \
  --descriptor_set_out="$out/mplus/v1/api_descriptor.binpb" \
  proto/mplus/v1/*.proto google/rpc/error_details.proto
printf '"""Code generated from proto/mplus by scripts/generate.sh. Do not edit."""\n' \
  | tee "$out/mplus/__init__.py" > "$out/mplus/v1/__init__.py"
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r --exclude=__pycache__ "$out/mplus" generated/mplus; then
    echo "generated/ is stale: run 'make generate' and commit the result" >&2
    exit 1
  fi
  echo "generated/ is up to date"
fi
