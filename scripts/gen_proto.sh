#!/usr/bin/env bash
# Regenerate fedlearn/runtime/grpc/fedlearn_pb2*.py from fedlearn.proto.
#
# flwr 1.42 pins protobuf < 7, while grpcio-tools >= 1.76 wants protobuf 7, so the
# generator lives in its own venv with a grpcio-tools release whose protobuf range
# includes the runtime's 6.33:
#   python3 -m venv /work/venv-gen
#   /work/venv-gen/bin/pip install "grpcio-tools==1.75.1" "protobuf==6.33.6"
# Usage: scripts/gen_proto.sh [path/to/venv-gen/bin/python]
set -euo pipefail
PY="${1:-${GEN_PYTHON:-/work/venv-gen/bin/python}}"
cd "$(dirname "$0")/.."
"$PY" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
    fedlearn/runtime/grpc/fedlearn.proto
echo "generated: $(ls fedlearn/runtime/grpc/fedlearn_pb2*)"
