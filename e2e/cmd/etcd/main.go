// Command etcd is upstream etcd's server, built from go.etcd.io/etcd/server/v3: the same one-line entry
// point as etcd's own main.go (the root module that holds it is not a library we can depend on).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
