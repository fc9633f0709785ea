#!/usr/bin/env bash
# Checks what the project promises about its dependencies and toolchain,
# offline (`cargo deny check advisories` needs the network: the workflow runs
# it):
#
#   - LICENSE-MIT and LICENSE-APACHE exist, as Cargo.toml's license says;
#   - rust-toolchain.toml's channel is at least Cargo.toml's rust-version,
#     and no dependency in Cargo.lock needs a newer Rust than rust-version
#     (the workflow also builds with that oldest toolchain);
#   - `cargo deny check licenses bans sources` against deny.toml.
#
# cargo-deny is installed with `cargo install --locked` when missing (a few
# minutes, once).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DENY_VERSION=0.20.2
FAILED=0
fail() { echo "check-supply-chain: $*" >&2; FAILED=1; }
say() { echo "check-supply-chain: $*"; }

license=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml)
[ "$license" = "MIT OR Apache-2.0" ] || fail "Cargo.toml license is '$license', want 'MIT OR Apache-2.0'"
for f in LICENSE-MIT LICENSE-APACHE; do
  [ -s "$f" ] || fail "$f is missing"
done
grep -q "Apache License" LICENSE-APACHE 2>/dev/null && grep -q "Version 2.0" LICENSE-APACHE \
  || fail "LICENSE-APACHE is not the Apache License 2.0"
grep -q "Permission is hereby granted, free of charge" LICENSE-MIT 2>/dev/null \
  || fail "LICENSE-MIT is not the MIT license"

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
channel=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
[ -n "$msrv" ] || fail "Cargo.toml has no rust-version"
[ -n "$channel" ] || fail "rust-toolchain.toml has no channel"
# version_le A B: A <= B, comparing dotted numbers.
# "1.85" means 1.85.0.
full() { case $1 in *.*.*) echo "$1" ;; *) echo "$1.0" ;; esac; }
version_le() {
  local a b
  a=$(full "$1") b=$(full "$2")
  [ "$(printf '%s\n%s\n' "$a" "$b" | sort -V | head -n 1)" = "$a" ]
}
version_le "$msrv" "$channel" || fail "rust-toolchain.toml's $channel is older than rust-version $msrv"
newer=$(cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu \
  | jq -r '.packages[] | select(.rust_version != null) | "\(.rust_version) \(.name) \(.version)"' \
  | while read -r needs name version; do
      version_le "$needs" "$msrv" || echo "$name $version needs Rust $needs"
    done)
[ -z "$newer" ] || fail "dependencies need a newer Rust than rust-version $msrv:"$'\n'"$newer"
say "toolchain $channel, rust-version $msrv; no dependency needs more"

if ! cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
  say "installing cargo-deny $CARGO_DENY_VERSION (once)"
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" --quiet
fi
cargo deny --log-level error check licenses bans sources || fail "cargo deny check licenses bans sources"

[ "$FAILED" = 0 ] || exit 1
say "all checks passed"
