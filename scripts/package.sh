#!/usr/bin/env bash
# Makes the agent-host package: dist/berth-<version>-<arch>.tar.gz with bin/ (berth,
# berth-agent, berth-controller), systemd/ (the units), install.sh and a README. Unpack it on a
# host and run install.sh there, as ECS Anywhere's install script is run (see README.md).
#   scripts/package.sh                      builds release binaries, then packages them
#   scripts/package.sh --profile debug      builds debug binaries instead
#   scripts/package.sh --bin-dir DIR        packages the binaries already in DIR (no build)
#   scripts/package.sh --out DIR            writes the tarball into DIR (default: dist/)
# Prints the tarball's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
me=package.sh
die() { echo "$me: $*" >&2; exit 2; }

profile=release
bin_dir=
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --profile | --bin-dir | --out)
      [ $# -ge 2 ] && [ -n "$2" ] && [ "${2:0:2}" != "--" ] || die "option $1 needs a value"
      case "$1" in
        --profile) profile=$2 ;;
        --bin-dir) bin_dir=$2 ;;
        --out) out=$2 ;;
      esac
      shift 2 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done
case "$profile" in
  release | debug) ;;
  *) die "--profile must be release or debug, not '$profile'" ;;
esac

bins=(berth berth-agent berth-controller)
if [ -z "$bin_dir" ]; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  flags=()
  [ "$profile" = release ] && flags+=(--release)
  echo "== building ($profile)" >&2
  timeout 3600 cargo build "${flags[@]}" --quiet -p berth-agent -p berth-controller >&2
  bin_dir=target/$profile
fi
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing or not executable"
done

# The version the binaries report, and the architecture they were built for (from the ELF
# header's e_machine, so a cross-built package is named for its target, not this host).
version=$(timeout 10 "$bin_dir/berth-agent" --version | awk '{print $2}')
[ -n "$version" ] || die "$bin_dir/berth-agent --version printed no version"
machine=$(od -An -tu2 -j18 -N2 "$bin_dir/berth-agent" | tr -d ' ')
case "$machine" in
  62) arch=amd64 ;;
  183) arch=arm64 ;;
  *) die "$bin_dir/berth-agent: unknown ELF machine $machine" ;;
esac

name=berth-$version-$arch
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/bin" "$root/systemd"
for b in "${bins[@]}"; do
  install -m 0755 "$bin_dir/$b" "$root/bin/$b"
  # Debug info is most of a debug build's size and none of a host's needs.
  if command -v strip >/dev/null 2>&1; then
    timeout 120 strip --strip-debug "$root/bin/$b"
  fi
done
install -m 0644 systemd/*.service "$root/systemd/"
install -m 0755 scripts/install.sh "$root/install.sh"
cat > "$root/README" <<EOF
Berth $version ($arch): an ECS-compatible container platform for your own hosts.

Agent host (as ECS Anywhere's ecs-anywhere-install.sh), as root:

  ./install.sh --controller https://CONTROLLER:7480 --cluster CLUSTER \\
      --activation-id ID --activation-code CODE --ca-fingerprint sha256:HEX

The activation comes from the controller host:
  berth ssm create-activation --iam-role ecsAnywhereRole --registration-limit 1
which prints the ActivationId, the ActivationCode (shown once) and the controller CA's
fingerprint. install.sh installs containerd, runc and nftables if missing (apt), the binaries into
/usr/local/bin, /etc/berth/agent.conf (0600) and the berth-agent systemd unit, starts
containerd and berth-agent and waits until the host is a registered container instance.
Re-running it is harmless. ./install.sh --help lists every option.

Controller host: install bin/berth-controller and bin/berth into /usr/local/bin,
systemd/berth-controller.service into /etc/systemd/system, put its settings
(BERTH_LISTEN=..., BERTH_DATA_DIR=...) in /etc/berth/controller.conf, then
  systemctl daemon-reload && systemctl enable --now berth-controller
EOF

mkdir -p "$out"
tarball=$(cd "$out" && pwd)/$name.tar.gz
# Reproducible: sorted names, root-owned, one timestamp (the commit's when there is one).
epoch=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -cf - "$name" | gzip -n > "$tarball.tmp"
mv "$tarball.tmp" "$tarball"
echo "$tarball"
