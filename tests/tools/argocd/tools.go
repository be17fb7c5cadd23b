//go:build tools

// Keeps argo-cd's cmd package (the multi-call binary) in this module's graph for `go mod tidy`.
package tools

import _ "github.com/argoproj/argo-cd/v3/cmd"
