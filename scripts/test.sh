#!/usr/bin/env bash
# Runs the whole Warden test suite on a fresh machine, installing what the tests need first:
#   - Debian packages to build librdkafka from source (rdkafka-sys), to run Python clients, and
#     rsyslog (the real syslog server the responder's SIEM receiver is tested against);
#   - the tansu Kafka-protocol broker (cargo install, once);
#   - the Python test clients (OpenAI SDK, pyarrow, DuckDB) and moto's S3 server in ./.venv;
# then checks formatting and lints, and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
missing=()
for package in build-essential pkg-config zlib1g-dev rsyslog; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
    echo "all present"
fi

step "tansu broker"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
if [ -n "${TANSU_BIN:-}" ] && [ -x "$TANSU_BIN" ]; then
    echo "using TANSU_BIN=$TANSU_BIN"
elif [ -x "$cargo_bin/tansu" ] || command -v tansu >/dev/null 2>&1; then
    echo "already installed"
else
    echo "installing tansu (one time, takes a while)"
    CARGO_TARGET_DIR="${TMPDIR:-/tmp}/warden-tansu-build" \
        cargo install tansu --features dynostore --locked
    # cargo keeps an explicit target directory; its gigabytes are of no further use.
    rm -rf "${TMPDIR:-/tmp}/warden-tansu-build"
fi

step "python test clients (.venv)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# The lock file pins every package (and what they pull in) to the versions CI ran.
if ! cmp -s tests/python/requirements.lock .venv/.installed-requirements 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.lock
    cp tests/python/requirements.lock .venv/.installed-requirements
fi
.venv/bin/python -c "import openai, pyarrow, duckdb, moto; print('openai', openai.__version__, '| pyarrow', pyarrow.__version__, '| duckdb', duckdb.__version__, '| moto', moto.__version__)"

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
