# syntax=docker/dockerfile:1
# Voxtral edge for RunPod serverless and any NVIDIA GPU host (see README, "Deploying on RunPod
# and GPU hosts"). vLLM comes with the base image, in its system Python; the edge gets its own
# virtual environment in /opt/edge. docker/entrypoint.sh picks the mode (MODE=runpod|serve).
FROM vllm/vllm-openai:v0.32.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Voxtral needs vLLM's audio extras; the pin keeps vLLM itself at the base image's version.
RUN uv pip install --system --no-cache "vllm[audio]==0.32.0"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
COPY vad ./vad
COPY ui ./ui
COPY .runpod ./.runpod
COPY --chmod=755 docker/entrypoint.sh /usr/local/bin/voxtral-entrypoint

# Editable, so that the edge finds ui/ next to server/. silero-vad only ships the ONNX model the
# edge runs; its torch requirement is for a code path the edge never uses.
RUN uv venv --python "$(command -v python3)" /opt/edge \
    && uv pip install --python /opt/edge/bin/python --no-cache -e . \
    && uv pip install --python /opt/edge/bin/python --no-cache --no-deps "silero-vad==6.2.3"

# The Smart Turn model (turn completion) is one file of pipecat-ai's wheel, put where the edge looks
# for it (vad/smart_turn.py); pin and checksum as in serve.sh.
RUN uv pip install --python /opt/edge/bin/python --no-cache --no-deps --target /tmp/pipecat "pipecat-ai==1.14.0" \
    && mkdir -p /opt/edge/share/smart-turn \
    && mv /tmp/pipecat/pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx /opt/edge/share/smart-turn/ \
    && rm -rf /tmp/pipecat \
    && echo "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f  /opt/edge/share/smart-turn/smart-turn-v3.2-cpu.onnx" | sha256sum -c -

# Optionally bake a model's weights into the image, so that workers start without downloading:
#   docker build --build-arg BAKE_MODEL=mistralai/Voxtral-Mini-3B-2507 --secret id=hf_token,env=HF_TOKEN .
# Only Mistral-format files are kept (the launcher serves Voxtral in Mistral's format).
ARG BAKE_MODEL=""
RUN --mount=type=secret,id=hf_token,required=false \
    if [ -n "$BAKE_MODEL" ]; then \
        if [ -f /run/secrets/hf_token ]; then HF_TOKEN="$(cat /run/secrets/hf_token)"; export HF_TOKEN; fi; \
        HF_HOME=/models/huggingface-cache python3 -c 'import sys; from huggingface_hub import snapshot_download; snapshot_download(sys.argv[1], ignore_patterns=["model-*.safetensors", "*.bin", "*.pt"])' "$BAKE_MODEL"; \
    fi

ENV MODEL_NAME=${BAKE_MODEL:-mistralai/Voxtral-Mini-3B-2507} \
    PYTHONUNBUFFERED=1

EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/voxtral-entrypoint"]
CMD []
