#!/usr/bin/env bash
# Sweeps on a lent GPU machine (the device tool) in one call: pack here, run there.
#
#   bash small_runs/device_sweep.sh pack
#       here, once: .devcache/ (git-ignored): the wheels the device image lacks (lmfit and its dependencies,
#       pure Python) and this machine's prepared corpora + tokenizers (cache.tar.xz, no raw downloads), so the
#       device tokenises the same texts with the same tokenizer as the committed tables (key f56ada82244e), and
#       the trained base models in the cache (bases/, keyed by what they are, not where they ran), so the device
#       skips re-training them and its CPT runs start from the same weights as this machine's; and this
#       checkout's commit (.devcache/commit): the device's copy of .git can be older than its working tree, so
#       rows would log a stale commit. Pack again after each commit (seconds).
#   device run, carry [".devcache"], command:
#       bash small_runs/device_sweep.sh run small_runs/configs/heldout_extra_m4L3_*.toml ...
#       installs the wheels, unpacks the cache, records the device's Python on the code corpus (its texts are this
#       machine's stdlib; without this the device would re-prepare it from its own and the tokenizer key would
#       change), then `dcpt sweep CONFIGS --jobs $JOBS` (one pool: each base model once, then every CPT run),
#       copying each table's losses.csv to $OUT/<table>.csv every 20 s and at the end. Commit those tables.
#   device run, carry [".devcache"], command: bash small_runs/device_sweep.sh setup dcpt quickstart --out $OUT/qs
#       the same set-up, then any command (no sweep), with the host's commit in its environment.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${DCPT_CACHE:-$HOME/.cache/dcpt-law}"
setup() {  # there: the wheels, the carried cache, the code corpus recorded for this Python, the commit
    [ -f .devcache/commit ] && export DCPT_GIT_COMMIT="$(cat .devcache/commit)"  # the host checkout's, not the copy's .git
    python -m pip install -q --no-index --no-deps .devcache/whl/*.whl || python -m pip install -q --no-index --no-deps --break-system-packages .devcache/whl/*.whl
    python -c "import lmfit"
    mkdir -p "$cache"
    tar -xJf .devcache/cache.tar.xz -C "$cache"
    python - "$cache" <<'EOF'
import json, sys
from pathlib import Path
from small_runs import corpora

path = Path(sys.argv[1]) / "corpora" / "manifest.json"
manifest = json.loads(path.read_text())
code = manifest["code"]
code["sources"] = [corpora._source_record(s) for s in corpora.SOURCES["code"]]  # this Python's version
path.write_text(json.dumps(manifest, indent=1))
assert corpora.is_prepared(path.parent, "code"), "the carried code corpus does not check out"
print("code corpus: carried texts, recorded for", code["sources"][0]["version"])
EOF
}
case "${1:-}" in
pack)
    mkdir -p .devcache/whl
    pip download -q --no-deps -d .devcache/whl \
        $(pip freeze | grep -i -E '^(lmfit|asteval|uncertainties|dill)==')
    extra=""; [ -d "$cache/bases" ] && extra="bases"
    tar -cJf .devcache/cache.tar.xz -C "$cache" corpora tokenizers $extra
    python -c "from dcpt_law.provenance import git_commit; print(git_commit())" > .devcache/commit
    ls -la .devcache .devcache/whl
    echo "rows will log commit $(cat .devcache/commit)"
    ;;
run)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 run CONFIG.toml ..." >&2; exit 2; }
    setup
    tables=$(python -c "import sys; from small_runs import sweeps
print(' '.join(sorted({str(sweeps.load_config(p).out_dir()) for p in sys.argv[1:]})))" "$@")
    copy() { for t in $tables; do [ -f "$t/losses.csv" ] && cp "$t/losses.csv" "${OUT:-/tmp}/$(basename "$t").csv"; done; true; }
    (while sleep 20; do copy; done) &
    watcher=$!
    python -m dcpt_law.cli sweep "$@" --jobs "${JOBS:-14}" || status=$?
    kill "$watcher" 2>/dev/null || true
    copy
    exit "${status:-0}"
    ;;
setup)
    shift
    setup
    [ $# -eq 0 ] || exec "$@"  # a command on the prepared cache, DCPT_GIT_COMMIT exported
    ;;
*)
    echo "usage: $0 pack | setup [COMMAND ...] | run CONFIG.toml ..." >&2
    exit 2
    ;;
esac
