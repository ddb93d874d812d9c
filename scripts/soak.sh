#!/usr/bin/env bash
# The issues' big counts, which CI runs smaller (see the README's "Soak" section). As root on a
# host that passed scripts/test.sh. Each run is a real test of the suite with its count raised:
#   - issue 8: 100 start/stop cycles across the four network modes, counting namespaces, veths,
#     bridge ports, addresses, nftables rules and IPAM leases before and after
#     (tests/tests/network.rs start_stop_cycles_across_all_modes_leave_nothing_behind; CI: 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --quiet
echo "== issue 8: 100 start/stop cycles across all network modes"
BERTH_NET_CYCLES=${BERTH_NET_CYCLES:-100} cargo test -p berth-tests --test network \
  start_stop_cycles_across_all_modes_leave_nothing_behind -- --nocapture
