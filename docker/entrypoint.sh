#!/usr/bin/env bash
# The container's entry point. MODE selects what runs:
#   runpod  the RunPod serverless worker (vLLM on localhost + job handler)
#   serve   the edge and vLLM, as ./serve.sh runs them, for any GPU host
# Without MODE: runpod when RunPod's variables are present (RUNPOD_POD_ID or RUNPOD_ENDPOINT_ID),
# otherwise serve. Arguments go to the worker (e.g. the RunPod SDK's --rp_serve_api).
set -euo pipefail

EDGE_PYTHON="${EDGE_PYTHON:-/opt/edge/bin/python}"
# vLLM lives in the image's system Python; the edge has its own virtual environment.
VLLM_PYTHON="${VLLM_PYTHON:-$(command -v python3)}"
export VLLM_PYTHON

mode="${MODE:-}"
if [[ -z "$mode" ]]; then
    if [[ -n "${RUNPOD_POD_ID:-}" || -n "${RUNPOD_ENDPOINT_ID:-}" ]]; then
        mode=runpod
    else
        mode=serve
    fi
fi

case "$mode" in
runpod)
    exec "$EDGE_PYTHON" -m server.runpod.worker "$@"
    ;;
serve)
    exec "$EDGE_PYTHON" -m server.runpod.environment "$EDGE_PYTHON" -m server.process.launcher
    ;;
*)
    echo "entrypoint: MODE must be runpod or serve, not '$mode'." >&2
    exit 2
    ;;
esac
