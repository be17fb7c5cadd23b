// kstatus judges Kubernetes objects the way Flux, kpt and cli-utils do, with the real
// library (sigs.k8s.io/cli-utils/pkg/kstatus/status). It reads one object, or a v1 List
// (as `kubectl get -o json` prints), as JSON on stdin and prints one JSON line per object:
// {"name": ..., "status": "Current|InProgress|Failed|Terminating|...", "message": ...}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	// Kubernetes' own decoder: integers stay int64, as kstatus expects.
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(data); err != nil {
		fail(err)
	}
	items := []unstructured.Unstructured{obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			fail(err)
		}
		items = list.Items
	}
	out := json.NewEncoder(os.Stdout)
	for i := range items {
		result, err := status.Compute(&items[i])
		if err != nil {
			fail(err)
		}
		if err := out.Encode(verdict{items[i].GetName(), result.Status.String(), result.Message}); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
