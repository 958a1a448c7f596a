# Shared helpers for integration-tests/*.sh (sourced, not executed).

IT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IT_CACHE="$IT_DIR/.cache"
IT_BIN="$IT_CACHE/bin"

it_log() { printf '[iter8-it] %s\n' "$*" >&2; }

# it_go_build NAME MODULE_DIR PACKAGE LDFLAGS
# Builds PACKAGE from the Go module in MODULE_DIR into $IT_BIN/NAME. Skips
# even loading the Go package graph when a stamp of the inputs (go version,
# go.mod, go.sum, the module's .go files, the flags) matches the last build;
# otherwise `go build` runs, which is itself incremental through Go's build
# cache.
it_go_build() {
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  command -v go >/dev/null 2>&1 || { it_log "go is not installed (need go >= 1.26)"; return 1; }
  mkdir -p "$IT_BIN"
  local out="$IT_BIN/$name" stamp="$IT_BIN/.$name.stamp" want
  want="$( { go version; echo "$pkg $ldflags"; cd "$dir" && find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    it_log "$name is up to date ($out)"
    return 0
  fi
  it_log "building $name ($pkg) ..."
  local start=$SECONDS
  (cd "$dir" && go build -mod=readonly -buildvcs=false -trimpath -ldflags "$ldflags" -o "$out" "$pkg")
  echo "$want" > "$stamp"
  it_log "built $name in $((SECONDS - start))s"
}
