//go:build tools

// Package tools pins the upstream programs the cluster harness builds: a real Kubernetes control plane
// (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl), etcd, the Argo
// Rollouts controller and its kubectl plugin. kwok and the Argo Workflows CLI have modules of their own
// (kwok/, argo-cli/). Nothing here is our code; scripts/build_e2e_tools.sh builds them with `go build -o`.
package tools

import (
	_ "github.com/argoproj/argo-rollouts/cmd/kubectl-argo-rollouts"
	_ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
	_ "go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
