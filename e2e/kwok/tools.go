//go:build tools

// Package tools pins kwok (fake nodes, and pods it marks Running and Ready). kwok v0.7.0 is built in its
// own module with the Kubernetes libraries it was released with (v0.33): it does not compile against the
// v0.34 libraries that the Argo Rollouts replace block in ../go.mod forces (metav1 renamed a constant).
// It only talks to the API server over HTTP, so the version skew is the ordinary client skew.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
