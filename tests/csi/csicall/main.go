// csi-call: one CSI call from the command line, for tests that talk to a driver
// without a gRPC stack of their own.
//
//	csi-call --endpoint=unix:///path/csi.sock csi.v1.Node/NodePublishVolume '{"volumeId": "..."}'
//
// It knows the CSI services (csi.v1.*) and the kubelet's plugin registration
// (pluginregistration.Registration, what a registrar serves).
// The request is the method's input message in protobuf's JSON form; the answer is
// printed the same way on stdout. A failed call prints its gRPC code and message on
// stderr ("NotFound: volume ... not found") and exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	_ "github.com/container-storage-interface/spec/lib/go/csi" // registers csi.v1
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	_ "k8s.io/kubelet/pkg/apis/pluginregistration/v1" // registers pluginregistration
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}

func main() {
	endpoint := flag.String("endpoint", "", "the driver's socket (unix:///path)")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of the call")
	flag.Parse()
	if *endpoint == "" || flag.NArg() < 1 || flag.NArg() > 2 {
		fail("usage: csi-call --endpoint=unix:///path SERVICE/METHOD [REQUEST-JSON]")
	}
	service, method, ok := strings.Cut(flag.Arg(0), "/")
	if !ok {
		fail("%q: want SERVICE/METHOD, e.g. csi.v1.Node/NodeGetInfo", flag.Arg(0))
	}
	found, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		fail("service %s: %v", service, err)
	}
	described, ok := found.(protoreflect.ServiceDescriptor)
	if !ok {
		fail("%s is not a service", service)
	}
	md := described.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		fail("service %s has no method %s", service, method)
	}
	req := dynamicpb.NewMessage(md.Input())
	resp := dynamicpb.NewMessage(md.Output())
	if flag.NArg() == 2 {
		if err := protojson.Unmarshal([]byte(flag.Arg(1)), req); err != nil {
			fail("request: %v", err)
		}
	}
	conn, err := grpc.NewClient(*endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fail("%v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := conn.Invoke(ctx, "/"+service+"/"+method, req, resp); err != nil {
		s := status.Convert(err)
		fmt.Fprintf(os.Stderr, "%s: %s\n", s.Code(), s.Message())
		os.Exit(1)
	}
	out, err := protojson.Marshal(resp)
	if err != nil {
		fail("answer: %v", err)
	}
	fmt.Println(string(out))
}
