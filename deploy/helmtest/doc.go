// Package helmtest tests the Helm chart in deploy/helm/cardinal and the
// example configs in deploy/examples. It holds tests only.
//
// The tests run the real helm binary (helm lint --strict, helm template) and
// decode every rendered manifest strictly into the Kubernetes API types, so a
// misspelt or misplaced field fails the test instead of being dropped by the
// API server. The cardinal.yml the chart renders is checked with `cardinal
// check config`, and the rendered output is compared with golden files:
//
//	go test ./deploy/helmtest/ -update   # rewrite testdata/golden after a chart change
//
// helm comes from $HELM_BINARY, PATH or $(go env GOPATH)/bin (`make deps`
// installs it). Without it the tests skip, unless CARDINAL_E2E=require.
package helmtest
