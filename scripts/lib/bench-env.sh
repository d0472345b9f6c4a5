# Sourced (not run) by the benchmark scripts once they are at the repository root: where things
# live. cache: downloads, venvs and results ($MIRAGE_CACHE, default ~/.cache/mirage); assets:
# what scripts/fetch-assets.sh fills ($MIRAGE_ASSETS, default $cache/assets; exported, as the
# Rust benchmarks and the tests read it); target: cargo's target directory.
cache="${MIRAGE_CACHE:-$HOME/.cache/mirage}"
export MIRAGE_ASSETS="${MIRAGE_ASSETS:-$cache/assets}"
assets="$MIRAGE_ASSETS"
target="${CARGO_TARGET_DIR:-target}"
