#!/usr/bin/env bash
# Run every benchmark: ours with .venv/bin/python, Pipecat's side with .venv-pipecat/bin/python,
# then print ours next to Pipecat's. Called by `make bench`.
#
#   bash benchmarks/run_all.sh [--quick] [--only NAME[,NAME...]] [--skip-pipecat] [--list]
#
#   --quick          smoke run: every benchmark that has a --quick flag gets it (results go to
#                    var/bench-quick/ instead of benchmarks/results/)
#   --only NAMES     run only these benchmarks (file names without .py; "pipecat_overhead"
#                    names Pipecat's side)
#   --skip-pipecat   do not create .venv-pipecat nor run pipecat_overhead.py (no comparison;
#                    other benchmarks with a Pipecat side take their own flag for that, e.g.
#                    BENCH_ARGS_TURN_LATENCY=--no-pipecat)
#   --list           print what would run, with the flags each gets, and exit
#
# Every benchmarks/*.py that has a main() or an `if __name__ == "__main__":` block runs in turn
# (files starting with "_" are helpers). pipecat_*.py files are Pipecat's side and run only in
# .venv-pipecat: pipecat_overhead.py is run here, the others are started by the benchmark they
# belong to (turn_latency.py starts pipecat_turn_latency.py). .venv-pipecat is set up first,
# with the extras every Pipecat-side file needs. A benchmark that needs extra setup or flags
# gets them from an environment variable named after it, e.g.
#
#   BENCH_ARGS_TURN_LATENCY="--no-pipecat --concurrency 1" make bench
#
# One failing benchmark never stops the others: each one's output is kept in var/bench-logs/,
# a summary is printed at the end, and the exit status is 1 if any of them failed.
# Environment: PIPECAT_VENV (default .venv-pipecat), BENCH_TIMEOUT_S (default 1200 per file).
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PYTHONUNBUFFERED=1  # progress shows as it happens through tee
PY="$ROOT/.venv/bin/python"
PIPECAT_VENV="${PIPECAT_VENV:-$ROOT/.venv-pipecat}"
# silero: the VAD (its model ships in the wheel); websocket: FastAPI for its websocket transport;
# deepgram, anthropic: the services of turn_latency.py's Pipecat side. The Twilio serializer
# needs no extra. anthropic here is <2, which is why Pipecat has a venv of its own. uvicorn
# serves pipecat_turn_latency.py's FastAPI app; webrtcvad-wheels is the VAD it gives Pipecat
# (Silero cannot hear sandbox speech; see pipecat_turn_latency.py).
PIPECAT_SPEC='pipecat-ai[silero,websocket,deepgram,anthropic]==1.14.0'
PIPECAT_VERSION='1.14.0'
TIMEOUT_S="${BENCH_TIMEOUT_S:-1200}"
LOG_DIR="$ROOT/var/bench-logs"

QUICK=0
ONLY=""
SKIP_PIPECAT=0
LIST=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="${2:?--only needs a name}"; shift ;;
        --only=*) ONLY="${1#--only=}" ;;
        --skip-pipecat) SKIP_PIPECAT=1 ;;
        --list) LIST=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    OUT_DIR="$ROOT/var/bench-quick"
else
    OUT_DIR="$ROOT/benchmarks/results"
fi
mkdir -p "$OUT_DIR" "$LOG_DIR"

if [ ! -x "$PY" ]; then
    echo "run_all.sh: $PY is missing: run 'make install' (or 'make bench') first" >&2
    exit 2
fi

wanted() {  # wanted NAME: is NAME selected by --only (or is there no --only)?
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}

runnable() {  # runnable FILE: does it have an entry point?
    grep -qE '^def main\(|^if __name__ == .__main__.:' "$1"
}

env_args() {  # env_args NAME: the flags from BENCH_ARGS_<NAME>
    local var
    var="BENCH_ARGS_$(echo "$1" | tr '[:lower:]-' '[:upper:]_')"
    echo "${!var:-}"
}

# --- what runs -----------------------------------------------------------------------------

OURS=()
for f in "$ROOT"/benchmarks/*.py; do
    name=$(basename "$f" .py)
    case "$name" in _*|pipecat_*) continue ;; esac
    runnable "$f" || continue
    wanted "$name" || continue
    OURS+=("$name")
done
RUN_PIPECAT=0
if [ "$SKIP_PIPECAT" = 0 ] && wanted pipecat_overhead; then RUN_PIPECAT=1; fi

CALLER_AUDIO="$LOG_DIR/caller_audio.ulaw"

flags_for() {  # flags_for NAME FILE: every flag NAME gets
    local name=$1 file=$2 flags=()
    if [ "$QUICK" = 1 ] && grep -q -- '"--quick"' "$file"; then flags+=(--quick); fi
    case "$name" in
        frame_overhead|pipecat_overhead)
            flags+=(--caller-audio "$CALLER_AUDIO" --json-out "$OUT_DIR/$name.json") ;;
    esac
    echo "${flags[*]} $(env_args "$name")"
}

if [ "$LIST" = 1 ]; then
    for name in "${OURS[@]}"; do
        echo ".venv/bin/python benchmarks/$name.py $(flags_for "$name" "benchmarks/$name.py")"
    done
    if [ "$RUN_PIPECAT" = 1 ]; then
        echo "$(basename "$PIPECAT_VENV")/bin/python benchmarks/pipecat_overhead.py" \
            "$(flags_for pipecat_overhead benchmarks/pipecat_overhead.py)"
    fi
    exit 0
fi

# --- Pipecat's environment -----------------------------------------------------------------

ensure_pipecat_venv() {
    local have=""
    if [ -x "$PIPECAT_VENV/bin/python" ]; then
        have=$("$PIPECAT_VENV/bin/python" -c \
            "import importlib.metadata as m; print(m.version('pipecat-ai'))" 2>/dev/null || true)
    fi
    if [ "$have" = "$PIPECAT_VERSION" ] && "$PIPECAT_VENV/bin/python" -c \
        "import psutil, onnxruntime, fastapi, deepgram, anthropic, uvicorn, uvloop, webrtcvad" \
        2>/dev/null; then
        return 0
    fi
    echo "== setting up $PIPECAT_VENV ($PIPECAT_SPEC) =="
    [ -x "$PIPECAT_VENV/bin/python" ] || python3 -m venv "$PIPECAT_VENV" || return 1
    "$PIPECAT_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "$PIPECAT_SPEC" psutil uvicorn uvloop webrtcvad-wheels || return 1
}

# --- running -------------------------------------------------------------------------------

declare -A STATUS SECONDS_TAKEN
ORDER=()

run_one() {  # run_one NAME PYTHON FILE FLAGS...
    local name=$1 python=$2 file=$3
    shift 3
    local log="$LOG_DIR/$name.log" t0 rc
    echo
    echo "== $name: $(basename "$(dirname "$(dirname "$python")")")/bin/python $file $* =="
    t0=$(date +%s)
    # shellcheck disable=SC2068  # flags are split on purpose
    timeout "$TIMEOUT_S" "$python" "$file" $@ 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
    if [ "$rc" = 0 ]; then
        STATUS[$name]="ok"
    elif [ "$rc" = 124 ]; then
        STATUS[$name]="TIMED OUT after ${TIMEOUT_S}s (log: ${log#"$ROOT"/})"
    else
        STATUS[$name]="FAILED, exit $rc (log: ${log#"$ROOT"/}; flags: BENCH_ARGS_$(
            echo "$name" | tr '[:lower:]-' '[:upper:]_'))"
    fi
    ORDER+=("$name")
}

echo "benchmarks on $(nproc) cores; load: $(uptime)"

needs_audio=0
for name in "${OURS[@]}"; do [ "$name" = frame_overhead ] && needs_audio=1; done
[ "$RUN_PIPECAT" = 1 ] && needs_audio=1
if [ "$needs_audio" = 1 ]; then
    # One caller-audio file for both sides, so both chains hear the very same bytes.
    "$PY" "$ROOT/benchmarks/frame_overhead.py" --write-caller-audio "$CALLER_AUDIO" || exit 1
fi

PIPECAT_READY=0
if [ "$SKIP_PIPECAT" = 0 ]; then
    # First, so that benchmarks with a Pipecat side of their own find it too.
    if ensure_pipecat_venv; then
        PIPECAT_READY=1
    else
        echo "run_all.sh: could not set up $PIPECAT_VENV (Pipecat sides will fail)" >&2
    fi
fi

for name in "${OURS[@]}"; do
    file="benchmarks/$name.py"
    # shellcheck disable=SC2046
    run_one "$name" "$PY" "$file" $(flags_for "$name" "$file")
done

if [ "$RUN_PIPECAT" = 1 ]; then
    if [ "$PIPECAT_READY" = 1 ]; then
        file="benchmarks/pipecat_overhead.py"
        # shellcheck disable=SC2046
        run_one pipecat_overhead "$PIPECAT_VENV/bin/python" "$file" \
            $(flags_for pipecat_overhead "$file")
    else
        STATUS[pipecat_overhead]="FAILED: could not set up $PIPECAT_VENV"
        ORDER+=(pipecat_overhead)
    fi
fi

# --- side by side --------------------------------------------------------------------------

if [ "${STATUS[frame_overhead]:-}" = ok ] && [ "${STATUS[pipecat_overhead]:-}" = ok ]; then
    echo
    echo "== ours vs Pipecat $PIPECAT_VERSION =="
    "$PY" "$ROOT/benchmarks/frame_overhead.py" --json-out "$OUT_DIR/frame_overhead.json" \
        --compare "$OUT_DIR/pipecat_overhead.json" | tee "$LOG_DIR/comparison.log"
fi

[ "${STATUS[turn_latency]:-}" = ok ] && "$PY" "$ROOT/benchmarks/_plot_turn_latency.py" "$OUT_DIR/turn_latency.json"
echo
echo "== summary (load now: $(uptime | sed 's/.*load average/load average/')) =="
failed=0
for name in "${ORDER[@]}"; do
    printf '  %-22s %6ss  %s\n' "$name" "${SECONDS_TAKEN[$name]:-0}" "${STATUS[$name]}"
    [ "${STATUS[$name]}" = ok ] || failed=1
done
echo "  results: ${OUT_DIR#"$ROOT"/}/   logs: ${LOG_DIR#"$ROOT"/}/"
exit "$failed"
