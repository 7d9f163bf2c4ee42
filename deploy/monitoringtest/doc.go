// Package monitoringtest tests Cardinal's Grafana dashboard
// (deploy/grafana/cardinal.json) and Prometheus alerting rules
// (deploy/alerts/cardinal.rules.yml). It holds tests only.
//
// The tests
//
//   - check the dashboard's structure: a Prometheus datasource variable, the
//     job and instance variables, a title and a description on every panel,
//     every panel on that datasource, no overlapping panels, every selector
//     restricted by the job and instance variables;
//   - extract every PromQL expression (panel targets, the template
//     variables' label_values and query_result queries, the rules' expr),
//     substitute Grafana's variables ($__rate_interval, $job, ${job}, ...)
//     and parse each with Prometheus' own parser;
//   - collect every metric name those expressions select and check that a
//     running Cardinal exposes each one: they build ./cmd/cardinal, run two
//     replicas of it as one cluster (--cluster.peers, so that series are
//     handed to their workload's owner and the cluster metrics exist) with
//     the cardinality estimates and the guard on, between generated Istio,
//     Envoy and Linkerd traffic (bench/meshgen) and a real Prometheus 2.42
//     receiver, and read their /metrics; the receiver also scrapes both and
//     evaluates every expression, so each one is valid PromQL for
//     Prometheus 2.42 as well;
//   - run `promtool check rules` and `promtool test rules`
//     (deploy/alerts/cardinal.rules.test.yml), which must cover every alert
//     both firing and not firing;
//   - check that the Helm chart's copies in deploy/helm/cardinal/files are
//     byte-identical to the canonical files.
//
// The tests that run processes need /usr/bin/prometheus and
// /usr/bin/promtool (Debian's prometheus package, or $PROMETHEUS_BINARY and
// $PROMTOOL_BINARY). Without them they skip, unless CARDINAL_E2E=require,
// which makes a missing binary a failure. Every wait is bounded and all
// traffic stays on 127.0.0.1.
//
//	go test ./deploy/monitoringtest/
package monitoringtest
