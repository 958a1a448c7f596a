#!/usr/bin/env bash
# Lists every pair of modules of one crate that import each other (A uses crate::B and B uses
# crate::A), for every crate under crates/. A module is a top-level file or directory of the
# crate's src/ (src/strategy/*.rs is the module `strategy`). Exits 1 if a pair is found.
#
#   scripts/module-cycles.sh            # all crates
#   scripts/module-cycles.sh iter8-api  # one crate
set -euo pipefail
cd "$(dirname "$0")/.."

found=0
for dir in crates/${1:-*}/src; do
  crate=$(basename "$(dirname "$dir")")
  # "from to" for every `crate::to` (also inside `use crate::{to, ...}` lists) in a module.
  edges=$(
    find "$dir" -name '*.rs' | while read -r file; do
      rel=${file#"$dir"/}
      from=${rel%%/*}
      from=${from%.rs}
      [ "$from" = lib ] || [ "$from" = main ] && continue
      # Comments are not imports.
      sed -e 's://.*$::' "$file" |
        tr '\n' ' ' |
        grep -oE 'crate::(\{[^}]*\}|[a-z_][a-z0-9_]*)' |
        sed -e 's/^crate:://' -e 's/[{}]//g' |
        tr ',' '\n' |
        sed -e 's/^ *//' -e 's/::.*$//' -e 's/ .*$//' |
        grep -E '^[a-z_][a-z0-9_]*$' |
        grep -vxE 'self|super' |
        sed "s/^/$from /" || true
    done | awk '$1 != $2' | sort -u
  )
  while read -r a b; do
    [ -z "${a:-}" ] && continue
    if [[ "$a" < "$b" ]] && grep -qx "$b $a" <<<"$edges"; then
      echo "$crate: $a <-> $b"
      found=1
    fi
  done <<<"$edges"
done
if [ "$found" = 0 ]; then
  echo "no two modules of one crate import each other"
fi
exit "$found"
