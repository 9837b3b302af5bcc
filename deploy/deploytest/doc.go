// Package deploytest checks the deployment files under deploy/: every Kubernetes manifest
// decodes strictly into its typed k8s.io/api struct (a misspelt field fails), the
// kustomization lists exactly the manifest files, containers carry resources, probes and
// pinned images, references between objects resolve, the seed's CronJob is reproduced
// exactly, the syvault containers use only the flags and SYVAULT_* variables the README
// documents, the NATS configuration parses with the nats-server the service embeds, the
// compose file is well formed, `go tool task images` builds every image the manifests
// name (with a stand-in docker), deploy/README.md's overlay and in-pod `syvault init`
// fit the manifests, and the Prometheus rules pass promtool's check and unit tests.
//
// It holds tests only; run them with `go test ./deploy/...`.
package deploytest
