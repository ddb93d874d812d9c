#!/usr/bin/env bash
# Installs what Berth needs on a Debian/Ubuntu host, as root: containerd, runc, protoc (for the
# build), busybox-static (for the local demo/test image), tini (the init of initProcessEnabled), iptables, nftables and iproute2 (task
# networks; the tests look inside namespaces with ip), curl, systemd (its
# systemd-analyze verifies the units in the fast suite), rsyslog (the syslog log driver's test runs a
# private rsyslogd of its own; it needs no system one), docker-registry, skopeo and apache2-utils
# (issue 11: the image tests and bench-pull run a private registry on loopback, push to it with
# skopeo and make its htpasswd file; no system registry is needed: on a systemd host the package's
# own service listens on :5000, which the tests never use, as they take free ports), python3,
# python3-venv and python3-pip (issue 13: the tests install the aws CLI v1 and boto3 from PyPI into
# a virtual environment under target/aws-venv; Debian's python3 makes none without python3-venv).
# Idempotent.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root" >&2; exit 1; }
pkgs=(containerd runc systemd protobuf-compiler busybox-static tini iptables nftables iproute2 curl rsyslog ca-certificates gcc libc6-dev pkg-config)
# The registry tests (issue 11): a real registry on loopback, skopeo to fill it, htpasswd for its auth.
pkgs+=(docker-registry skopeo apache2-utils)
# The aws CLI tests (issue 13): a venv for PyPI's awscli (v1) and boto3.
pkgs+=(python3 python3-venv python3-pip)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps.sh: no Rust toolchain; install Rust 1.88 or newer with rustup (https://rustup.rs)" >&2
  exit 1
fi
