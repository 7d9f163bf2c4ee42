#!/usr/bin/env bash
# Prometheus -> Cardinal -> Prometheus on this machine, with real binaries:
#
#   exporter  cardinal demo --serve        mesh traffic (Istio, Envoy, Linkerd) with
#             on $EXPORTER_ADDR             request ids, trace ids, user agents, paths
#   sender    prometheus --agent           scrapes the exporter, remote-writes to Cardinal
#   cardinal  cardinal serve               the Istio preset (deploy/examples/istio.yml)
#             on $CARDINAL_ADDR             with an admin token
#   receiver  prometheus                   --web.enable-remote-write-receiver
#             on $RECEIVER_ADDR
#
# It prints what to look at, then runs until Ctrl-C. With QUICKSTART_CHECK=1
# it waits until the receiver holds the mesh's series without their pod and
# request labels, prints "quick start OK" and stops everything (the test of
# this script does that). docker-compose.yml starts the same topology.
#
#   make build && deploy/quickstart/quickstart.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
CARDINAL="${CARDINAL:-$root/bin/cardinal}"
PROMETHEUS="${PROMETHEUS:-$(command -v prometheus || echo /usr/bin/prometheus)}"
RECEIVER_ADDR="${RECEIVER_ADDR:-127.0.0.1:9090}"
CARDINAL_ADDR="${CARDINAL_ADDR:-127.0.0.1:9091}"
EXPORTER_ADDR="${EXPORTER_ADDR:-127.0.0.1:9100}"
SENDER_ADDR="${SENDER_ADDR:-127.0.0.1:9092}"
WORK="${QUICKSTART_DIR:-$(mktemp -d)}"
mkdir -p "$WORK"

for bin in "$CARDINAL" "$PROMETHEUS"; do
	[ -x "$bin" ] || { echo "missing $bin: run 'make build' (cardinal) and 'apt-get install prometheus'" >&2; exit 1; }
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The admin token: any secret string in a file.
head -c 24 /dev/urandom | base64 > "$WORK/admin-token"
# The Istio preset, forwarding to the receiver, with the token and a state file.
sed -e "s#url: http://127.0.0.1:9090/api/v1/write#url: http://$RECEIVER_ADDR/api/v1/write#" \
	"$root/deploy/examples/istio.yml" > "$WORK/cardinal.yml"
printf 'admin:\n  bearer_token_file: %s\n' "$WORK/admin-token" >> "$WORK/cardinal.yml"
sed -e "s#127.0.0.1:9100#$EXPORTER_ADDR#; s#127.0.0.1:9091#$CARDINAL_ADDR#" "$here/sender.yml" > "$WORK/sender.yml"
cp "$here/receiver.yml" "$WORK/receiver.yml"

"$PROMETHEUS" --config.file="$WORK/receiver.yml" --storage.tsdb.path="$WORK/receiver-data" \
	--web.listen-address="$RECEIVER_ADDR" --web.enable-remote-write-receiver \
	--enable-feature=exemplar-storage >"$WORK/receiver.log" 2>&1 &
pids+=($!)
"$CARDINAL" serve --config.file="$WORK/cardinal.yml" --web.listen-address="$CARDINAL_ADDR" >"$WORK/cardinal.log" 2>&1 &
pids+=($!)
"$CARDINAL" demo --serve="$EXPORTER_ADDR" --workloads=20 >"$WORK/exporter.log" 2>&1 &
pids+=($!)
"$PROMETHEUS" --enable-feature=agent --config.file="$WORK/sender.yml" --storage.agent.path="$WORK/sender-data" \
	--web.listen-address="$SENDER_ADDR" >"$WORK/sender.log" 2>&1 &
pids+=($!)

query() { curl -sfG "http://$RECEIVER_ADDR/api/v1/query" --data-urlencode "query=$1"; }
cat <<MSG
Running; logs in $WORK.
  sender     http://$SENDER_ADDR      (agent, scrapes http://$EXPORTER_ADDR/metrics)
  cardinal   http://$CARDINAL_ADDR/metrics, /api/v1/collisions, /api/v1/cardinality
  receiver   http://$RECEIVER_ADDR/graph
Check the result on the receiver (after a scrape or two):
  count({__name__=~"istio_.*"})                          mesh series that arrived
  count({__name__=~"istio_.*", pod!=""})                 none: the preset drops pod
  count({__name__=~"istio_.*", request_id!=""})         none: request ids are gone
  sum by (app) (rate(istio_requests_total[1m]))          the totals, merged exactly
Admin calls need the token in $WORK/admin-token:
  curl -H "Authorization: Bearer \$(cat $WORK/admin-token)" -X PUT -d '{"max_series": 500}' \\
    http://$CARDINAL_ADDR/api/v1/limits/bookinfo%2Freviews
MSG

if [ "${QUICKSTART_CHECK:-}" = 1 ]; then
	for _ in $(seq 1 120); do
		mesh=$(query 'count({__name__=~"istio_.*"})' | grep -o '"value":\[[^]]*\]' | grep -o '"[0-9]*"]' | tr -dc 0-9 || true)
		pods=$(query 'count({__name__=~"istio_.*", pod!=""}) or vector(0)' | grep -o '"value":\[[^]]*\]' | grep -o '"[0-9]*"]' | tr -dc 0-9 || true)
		ids=$(query 'count({__name__=~"istio_.*", request_id!=""}) or vector(0)' | grep -o '"value":\[[^]]*\]' | grep -o '"[0-9]*"]' | tr -dc 0-9 || true)
		if [ -n "$mesh" ] && [ "$mesh" -gt 0 ] && [ "$pods" = 0 ] && [ "$ids" = 0 ]; then
			echo "quick start OK: $mesh mesh series at the receiver, none of them with a pod or request_id label"
			exit 0
		fi
		sleep 1
	done
	echo "quick start FAILED: mesh=$mesh pods=$pods request_ids=$ids; logs in $WORK" >&2
	tail -20 "$WORK"/cardinal.log >&2
	exit 1
fi
wait
