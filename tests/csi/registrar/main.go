// csi-local-registrar: registers a CSI driver's node socket with the kubelet, the job of
// upstream's node-driver-registrar (kubernetes-csi), which the Go module proxy this
// project builds from does not serve (its module path has no /v2 for its v2 tags, and
// no pseudo-version of it is served either). It takes upstream's flags of the same name,
// so that the launcher's command line stays when upstream's can be built instead:
//
//	csi-local-registrar --csi-address=<driver socket> \
//	    --kubelet-registration-path=<driver socket as the kubelet sees it> \
//	    --plugin-registration-path=<kubelet root>/plugins_registry
//
// It asks the driver its name (GetPluginInfo), serves the kubelet's plugin registration
// API (k8s.io/kubelet pluginregistration/v1) on <plugin-registration-path>/<name>-reg.sock
// and answers GetInfo with a CSIPlugin of that name at the kubelet registration path,
// CSI 1.0.0. The kubelet watches that directory, calls GetInfo, then reports with
// NotifyRegistrationStatus; a registration the kubelet refused ends the registrar with
// status 1, as upstream's does, so that whoever runs it sees it.
package main

import (
	"context"
	"errors"
	"flag"
	"io/fs"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type registrar struct {
	registration.UnimplementedRegistrationServer
	name, endpoint string
	refused        chan string
}

func (r *registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{
		Type:              registration.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if s.GetPluginRegistered() {
		log.Printf("registered with the kubelet: %s at %s", r.name, r.endpoint)
	} else {
		r.refused <- s.GetError()
	}
	return &registration.RegistrationStatusResponse{}, nil
}

// driverName asks the driver at address its name, retrying until it answers (it may
// start after the registrar).
func driverName(address string, timeout time.Duration) (string, error) {
	target := address
	if !strings.HasPrefix(target, "unix://") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
		cancel()
		if err == nil {
			return info.GetName(), nil
		}
		if time.Now().After(deadline) {
			return "", err
		}
		time.Sleep(time.Second)
	}
}

func main() {
	csiAddress := flag.String("csi-address", "/run/csi/socket", "the CSI driver's socket, as this process sees it")
	kubeletPath := flag.String("kubelet-registration-path", "", "the CSI driver's socket, as the kubelet sees it")
	pluginDir := flag.String("plugin-registration-path", "/registration", "the kubelet's plugin registration directory (<kubelet root>/plugins_registry)")
	timeout := flag.Duration("timeout", time.Minute, "how long to wait for the driver to answer GetPluginInfo")
	flag.Parse()
	if *kubeletPath == "" {
		log.Fatal("--kubelet-registration-path is required")
	}
	name, err := driverName(*csiAddress, *timeout)
	if err != nil {
		log.Fatalf("GetPluginInfo of %s: %v", *csiAddress, err)
	}
	socket := filepath.Join(*pluginDir, name+"-reg.sock")
	if err := os.MkdirAll(*pluginDir, 0o750); err != nil {
		log.Fatal(err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Fatal(err)
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatal(err)
	}
	r := &registrar{name: name, endpoint: *kubeletPath, refused: make(chan string, 1)}
	server := grpc.NewServer()
	registration.RegisterRegistrationServer(server, r)
	go func() {
		if err := server.Serve(listener); err != nil {
			log.Fatal(err)
		}
	}()
	log.Printf("registering %s (%s) on %s", name, *kubeletPath, socket)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case <-stop:
	case message := <-r.refused:
		log.Printf("the kubelet refused %s: %s", name, message)
		code = 1
	}
	// The kubelet deregisters a plugin whose socket is gone. Gracefully: the kubelet's
	// NotifyRegistrationStatus gets its answer first.
	server.GracefulStop()
	_ = os.Remove(socket)
	os.Exit(code)
}
