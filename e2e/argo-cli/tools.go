//go:build tools

// Package tools pins the upstream Argo Workflows CLI, used for `argo lint --offline` on argo/. It is built in
// its own module with the dependencies Argo Workflows was released with (Kubernetes v0.33 libraries), apart
// from the controller module in ../go.mod, which the Argo Rollouts replace block holds at v0.34.
// v4.0.5 is the only release the module proxy here serves (v3 is refused); only the offline linter is used.
package tools

import _ "github.com/argoproj/argo-workflows/v4/cmd/argo"
