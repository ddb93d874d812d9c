#!/usr/bin/env bash
# The issues' big counts, which CI runs smaller (see the README's "Soak" section). As root on a
# host that passed scripts/test.sh. Each run is a real test of the suite with its count raised:
#   - issue 8: 100 start/stop cycles across the four network modes, counting namespaces, veths,
#     bridge ports, addresses, nftables rules and IPAM leases before and after
#     (tests/tests/network.rs start_stop_cycles_across_all_modes_leave_nothing_behind; CI: 8).
#   - issue 10: 1,000,000 numbered lines in a container's spool, in order, also while the agent
#     is killed -9 twice (tests/tests/logs_capture.rs; CI: 100,000); and 1,000,000 awslogs
#     lines in the controller's stream exactly once and in order across two agent kill -9s and
#     a controller restart (tests/tests/logs_e2e.rs; CI: 50,000); and a container writing 50 MB
#     while the controller is down, every line arriving once it is back (logs_e2e.rs; CI: 20 MB).
#   - issue 12: RunTask placing 100,000 tasks on 1,000 simulated agents (in-process, real gRPC),
#     printing placements/s beside the fsync'd commit floor (tests/src/bin/bench_placement.rs;
#     CI: 50 agents, 2,000 tasks, its unit test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --quiet
echo "== issue 8: 100 start/stop cycles across all network modes"
BERTH_NET_CYCLES=${BERTH_NET_CYCLES:-100} cargo test -p berth-tests --test network \
  start_stop_cycles_across_all_modes_leave_nothing_behind -- --nocapture
echo "== issue 10: 1,000,000 numbered lines captured in order, also across two agent kill -9s"
BERTH_LOG_LINES=${BERTH_LOG_LINES:-1000000} cargo test -p berth-tests --test logs_capture \
  -- numbered_lines_reach_the_spools the_agent_killed_twice_mid_stream --nocapture
echo "== issue 10: 1,000,000 awslogs lines in the controller's stream, exactly once, across kills and a restart"
BERTH_LOG_LINES=${BERTH_LOG_LINES:-1000000} cargo test -p berth-tests --test logs_e2e \
  awslogs_lines_reach_the_stream_exactly_once -- --nocapture
echo "== issue 10: 50 MB written while the controller is down, every line stored once it is back"
BERTH_LOG_OUTAGE_MB=${BERTH_LOG_OUTAGE_MB:-50} cargo test -p berth-tests --test logs_e2e \
  a_container_writing_50_mb_while_the_controller_is_down -- --nocapture
echo "== issue 12: placement throughput, 100,000 tasks on 1,000 simulated agents (release build)"
CARGO_INCREMENTAL=0 cargo build --release -p berth-tests --bin bench-placement --quiet
./target/release/bench-placement --agents "${BERTH_BENCH_AGENTS:-1000}" \
  --tasks "${BERTH_BENCH_TASKS:-100000}"
