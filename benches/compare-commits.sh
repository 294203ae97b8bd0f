#!/usr/bin/env bash
# Runs criterion groups of benches/array.rs on another commit and on this tree, one
# after the other per group, so that both see the same machine load: the way the
# cost of a change is measured (BENCHMARKS.md, "Two metadata copies").
#
#   bash benches/compare-commits.sh BASE_COMMIT GROUP...
#   e.g. bash benches/compare-commits.sh 6164af2 array_copy_ops array_first_write_shared
#
# Output: bench-BASE-GROUP.txt and bench-this-GROUP.txt in $OUT (default /tmp).
set -euo pipefail
base=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-/tmp}
tree=$(mktemp -d)
git -C "$here" worktree add -q --detach "$tree" "$base"
trap 'git -C "$here" worktree remove --force "$tree"' EXIT
for g in "$@"; do
  (cd "$tree" && CARGO_TARGET_DIR="$here/target/bench-base" cargo bench --bench array -- "$g") \
    > "$out/bench-$base-$g.txt" 2>&1
  (cd "$here" && cargo bench --bench array -- "$g") > "$out/bench-this-$g.txt" 2>&1
  echo "$g: $out/bench-$base-$g.txt $out/bench-this-$g.txt"
done
