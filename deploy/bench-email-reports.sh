#!/usr/bin/env bash
# The email pipeline's end-to-end benchmark (docs/benchmarks.md): a fresh local product
# (3 brokers + one email-reports instance, release builds), signed webhook traffic at --rate
# for --seconds, then the time until the reports equal the ground truth. Prints the ingest
# rate (2xx), the freshness probes (2xx -> visible in a report) and the sustained rate into
# the reports (events / time from the first POST until the check passed).
# Usage: deploy/bench-email-reports.sh RATE SECONDS [PROVIDERS]   (PROVIDERS: comma-separated)
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-20000}
seconds=${2:-20}
providers=${3:-sendgrid,sparkpost,mandrill}
cargo build --release -q -p broker -p email-reports
dir=$(mktemp -d /tmp/email-bench.XXXX)
trap 'kill -INT $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$dir"' EXIT
RUST_LOG=warn target/release/email-reports dev --data-dir "$dir" --broker-bin target/release/broker \
  --listen 127.0.0.1:18480 --base-port 19492 >"$dir/dev.log" 2>&1 &
dev=$!
for _ in $(seq 1 120); do curl -sf http://127.0.0.1:18480/health >/dev/null && break; sleep 0.5; done
start=$(date +%s.%N)
RUST_LOG=warn target/release/email-reports loadgen --url http://127.0.0.1:18480 --secrets "$dir/dev-secrets.json" \
  --rate "$rate" --seconds "$seconds" --batch 200 --concurrency 64 --providers "$providers" --truth "$dir/truth.json"
RUST_LOG=warn target/release/email-reports check --url http://127.0.0.1:18480 --truth "$dir/truth.json" --wait-seconds 600
end=$(date +%s.%N)
events=$(python3 -c "import json;print(json.load(open('$dir/truth.json'))['events'])")
python3 -c "print(f'into the reports: {$events} events in {$end-$start:.1f} s = {$events/($end-$start):.0f} events/s sustained')"
