// csi-local: a small CSI driver for the local test cluster. It serves the CSI
// identity and controller services on a unix socket and keeps each volume as a
// filesystem of its own under a state directory (volume.go: a sparse image file,
// formatted, on a loop device). With --node-id it serves the node service too
// (node.go: the volume's device mounted at stage, bind-mounted at publish, grown by
// NodeExpandVolume): that is the instance the kubelet of a real node calls, run in
// the node's mount namespace on the same --state-dir as the controller instance,
// which runs without --node-id. The controller instance mounts each volume on its
// directory, in its own mount namespace, for as long as the volume exists: that is
// where snapshots and clones read the data, and where the local cluster's tests look.
//
// Layout under --state-dir:
//
//	volumes/<volume-id>.img       the volume's filesystem, a sparse file of its capacity
//	volumes/<volume-id>/          its mount point (the controller instance's mount)
//	volumes/<volume-id>.json      its name, capacity and content source
//	snapshots/<snapshot-id>.tar   the volume's files as a tar archive
//	snapshots/<snapshot-id>.json  its name, source volume, size and creation time
//	fail-delete/<volume-id>       while present, DeleteVolume of that volume fails
//	fail-snapshot/<volume-id>     while present, CreateSnapshot of that volume fails
//	fail-expand/<volume-id>       while present, ControllerExpandVolume of that volume fails
//
// A fail-* file's content is the error message (gRPC code Internal); remove the
// file and the next retry succeeds. IDs are derived from the request's name, so a
// retried CreateVolume or CreateSnapshot finds what the first call made.
package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	mount "k8s.io/mount-utils"
)

const (
	driverName    = "csi-local.sluice.dev"
	driverVersion = "0.1.0"
)

type volumeMeta struct {
	Name          string `json:"name"`
	CapacityBytes int64  `json:"capacityBytes"`
	SourceVolume  string `json:"sourceVolume,omitempty"`
	SourceSnap    string `json:"sourceSnapshot,omitempty"`
}

type snapshotMeta struct {
	Name         string    `json:"name"`
	SourceVolume string    `json:"sourceVolume"`
	SizeBytes    int64     `json:"sizeBytes"`
	CreatedAt    time.Time `json:"createdAt"`
}

type driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer
	csi.UnimplementedNodeServer
	nodeID  string
	root    string
	mounter mount.Interface
	// One lock for every call: the sidecars retry and race each other, and the
	// driver's work is small.
	mu sync.Mutex
}

func id(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:12])
}

func (d *driver) volumeDir(volumeID string) string {
	return filepath.Join(d.root, "volumes", volumeID)
}

func (d *driver) snapshotPath(snapshotID, ext string) string {
	return filepath.Join(d.root, "snapshots", snapshotID+ext)
}

// validID keeps IDs from the wire inside the state directory.
func validID(s string) bool {
	return s != "" && !strings.ContainsAny(s, "/\\\x00") && s != "." && s != ".."
}

func readJSON(path string, into any) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal(data, into)
}

// writeJSON writes atomically, so a crash never leaves half a record.
func writeJSON(path string, value any) error {
	data, err := json.Marshal(value)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// failure returns the injected error for volumeID from dir (fail-delete, fail-snapshot).
func (d *driver) failure(dir, volumeID string) error {
	data, err := os.ReadFile(filepath.Join(d.root, dir, volumeID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return status.Errorf(codes.Internal, "reading %s marker: %v", dir, err)
	}
	message := strings.TrimSpace(string(data))
	if message == "" {
		message = dir + " injected for " + volumeID
	}
	return status.Error(codes.Internal, message)
}

// --- identity -------------------------------------------------------------------------

func (d *driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: driverName, VendorVersion: driverVersion}, nil
}

func (d *driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	// No VOLUME_ACCESSIBILITY_CONSTRAINTS: volumes have no topology. Volumes grow while
	// in use (ONLINE): the node grows a mounted filesystem.
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{
			Type: csi.PluginCapability_Service_CONTROLLER_SERVICE,
		}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE,
		}}},
	}}, nil
}

func (d *driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// --- controller -----------------------------------------------------------------------

func (d *driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, c := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{
			Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: c}},
		})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// capacityFor is the size of a new volume: what is required, at least minCapacity (the
// default when nothing is asked), in whole capacityUnits, within the limit.
func capacityFor(r *csi.CapacityRange) (int64, error) {
	required, limit := r.GetRequiredBytes(), r.GetLimitBytes()
	if required < 0 || limit < 0 || (limit > 0 && required > limit) {
		return 0, status.Errorf(codes.OutOfRange, "invalid capacity range %d..%d", required, limit)
	}
	size := required
	if size == 0 {
		size = defaultCapacity
		if limit > 0 && limit < size {
			size = limit
		}
	}
	size = roundUp(max(size, minCapacity), capacityUnit)
	if limit > 0 && size > limit {
		return 0, status.Errorf(codes.OutOfRange,
			"capacity range %d..%d: volumes are whole %d-byte blocks, at least %d bytes",
			required, limit, capacityUnit, minCapacity)
	}
	return size, nil
}

func (d *driver) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	for _, c := range req.GetVolumeCapabilities() {
		if c.GetBlock() != nil {
			return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
		}
	}
	capacity, err := capacityFor(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	volumeID := id("vol-", req.GetName())
	var meta volumeMeta
	found, err := readJSON(d.metaPath(volumeID), &meta)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading volume %s: %v", volumeID, err)
	}
	if found {
		limit := req.GetCapacityRange().GetLimitBytes()
		if meta.CapacityBytes < req.GetCapacityRange().GetRequiredBytes() || (limit > 0 && meta.CapacityBytes > limit) {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %q exists with capacity %d", req.GetName(), meta.CapacityBytes)
		}
		source := req.GetVolumeContentSource()
		if source.GetSnapshot().GetSnapshotId() != meta.SourceSnap || source.GetVolume().GetVolumeId() != meta.SourceVolume {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %q exists with another content source", req.GetName())
		}
		return &csi.CreateVolumeResponse{Volume: d.volume(volumeID, meta)}, nil
	}

	meta = volumeMeta{Name: req.GetName(), CapacityBytes: capacity}
	// The record comes last: until then a retry (after a crash) starts over.
	if err := d.removeVolume(volumeID); err != nil {
		return nil, err
	}
	if err := d.makeVolume(volumeID, capacity); err != nil {
		_ = d.removeVolume(volumeID)
		return nil, err
	}
	if err := d.fill(d.volumeDir(volumeID), req.GetVolumeContentSource(), &meta); err != nil {
		_ = d.removeVolume(volumeID)
		return nil, err
	}
	if err := writeJSON(d.metaPath(volumeID), meta); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &csi.CreateVolumeResponse{Volume: d.volume(volumeID, meta)}, nil
}

// makeVolume makes volumeID's filesystem of capacity bytes and mounts it on its directory.
func (d *driver) makeVolume(volumeID string, capacity int64) error {
	dir, image := d.volumeDir(volumeID), d.imagePath(volumeID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if err := makeFilesystem(image, capacity); err != nil {
		return status.Errorf(codes.Internal, "making the filesystem of %s: %v", volumeID, err)
	}
	if err := mountImage(image, dir); err != nil {
		return status.Errorf(codes.Internal, "mounting %s: %v", volumeID, err)
	}
	return nil
}

// removeVolume undoes makeVolume, whatever part of it was done: unmounts the directory
// (the loop device detaches with its last mount), removes it and the image.
func (d *driver) removeVolume(volumeID string) error {
	dir := d.volumeDir(volumeID)
	if err := d.unmount(dir); err != nil {
		return err
	}
	// os.Remove, not RemoveAll: should the directory still show the volume somehow, its
	// data must not go with it.
	for _, path := range []string{dir, d.imagePath(volumeID)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return status.Errorf(codes.Internal, "%v", err)
		}
	}
	return nil
}

// fill copies a content source (a snapshot's archive or another volume) into dir.
func (d *driver) fill(dir string, source *csi.VolumeContentSource, meta *volumeMeta) error {
	if source == nil {
		return nil
	}
	if snap := source.GetSnapshot(); snap != nil {
		snapshotID := snap.GetSnapshotId()
		var sm snapshotMeta
		found, err := false, error(nil)
		if validID(snapshotID) {
			found, err = readJSON(d.snapshotPath(snapshotID, ".json"), &sm)
		}
		if err != nil {
			return status.Errorf(codes.Internal, "reading snapshot %s: %v", snapshotID, err)
		}
		if !found {
			return status.Errorf(codes.NotFound, "snapshot %q not found", snapshotID)
		}
		archive, err := os.Open(d.snapshotPath(snapshotID, ".tar"))
		if err != nil {
			return status.Errorf(codes.Internal, "%v", err)
		}
		defer archive.Close()
		if err := extract(archive, dir); err != nil {
			return status.Errorf(codes.Internal, "restoring snapshot %s: %v", snapshotID, err)
		}
		meta.SourceSnap = snapshotID
		return nil
	}
	if vol := source.GetVolume(); vol != nil {
		sourceID := vol.GetVolumeId()
		if !d.exists(sourceID) {
			return status.Errorf(codes.NotFound, "volume %q not found", sourceID)
		}
		reader, writer := io.Pipe()
		go func() { writer.CloseWithError(archive(d.volumeDir(sourceID), writer)) }()
		if err := extract(reader, dir); err != nil {
			return status.Errorf(codes.Internal, "cloning volume %s: %v", sourceID, err)
		}
		meta.SourceVolume = sourceID
		return nil
	}
	return status.Error(codes.InvalidArgument, "unknown volume content source")
}

func (d *driver) volume(volumeID string, meta volumeMeta) *csi.Volume {
	v := &csi.Volume{VolumeId: volumeID, CapacityBytes: meta.CapacityBytes}
	switch {
	case meta.SourceSnap != "":
		v.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{
			Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: meta.SourceSnap},
		}}
	case meta.SourceVolume != "":
		v.ContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{
			Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: meta.SourceVolume},
		}}
	}
	return v
}

func (d *driver) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if volumeID == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if !validID(volumeID) {
		return &csi.DeleteVolumeResponse{}, nil // no such volume: already deleted
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.failure("fail-delete", volumeID); err != nil {
		return nil, err
	}
	// Data first, record last: a crash in between is retried by the provisioner. A node
	// that still has the volume staged keeps its mount (and so the loop device) until it
	// unstages; the image's blocks are freed then.
	if err := d.removeVolume(volumeID); err != nil {
		return nil, err
	}
	if err := os.Remove(d.metaPath(volumeID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func (d *driver) ValidateVolumeCapabilities(_ context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume capabilities are required")
	}
	if !d.exists(req.GetVolumeId()) {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	for _, c := range req.GetVolumeCapabilities() {
		if c.GetBlock() != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: "block volumes are not supported"}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ControllerExpandVolume grows the volume's image file and its loop device; the
// filesystem on it grows on the node (NodeExpandVolume), where it is mounted.
func (d *driver) ControllerExpandVolume(_ context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if volumeID == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity range is required")
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var meta volumeMeta
	found := false
	if validID(volumeID) {
		var err error
		if found, err = readJSON(d.metaPath(volumeID), &meta); err != nil {
			return nil, status.Errorf(codes.Internal, "reading volume %s: %v", volumeID, err)
		}
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", volumeID)
	}
	if err := d.failure("fail-expand", volumeID); err != nil {
		return nil, err
	}
	required, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	if required < 0 || limit < 0 || (limit > 0 && required > limit) {
		return nil, status.Errorf(codes.OutOfRange, "invalid capacity range %d..%d", required, limit)
	}
	if required < meta.CapacityBytes || (limit > 0 && limit < meta.CapacityBytes) {
		return nil, status.Errorf(codes.OutOfRange,
			"volume %s has %d bytes: volumes do not shrink (asked for %d..%d)",
			volumeID, meta.CapacityBytes, required, limit)
	}
	size := roundUp(required, capacityUnit)
	if limit > 0 && size > limit {
		return nil, status.Errorf(codes.OutOfRange,
			"capacity range %d..%d: volumes are whole %d-byte blocks", required, limit, capacityUnit)
	}
	if size > meta.CapacityBytes {
		// The image first, the record last: a retry after a crash grows it again, to the
		// same size. The loop device learns the new size (losetup --set-capacity); its
		// filesystem still has the old one until the node grows it.
		if err := os.Truncate(d.imagePath(volumeID), size); err != nil {
			return nil, status.Errorf(codes.Internal, "growing volume %s: %v", volumeID, err)
		}
		device, _, err := loopDevice(d.imagePath(volumeID))
		if err != nil {
			return nil, status.Errorf(codes.Internal, "finding the loop device of %s: %v", volumeID, err)
		}
		if device != "" {
			if err := run("losetup", "--set-capacity", device); err != nil {
				return nil, status.Errorf(codes.Internal, "growing volume %s: %v", volumeID, err)
			}
		}
		meta.CapacityBytes = size
		if err := writeJSON(d.metaPath(volumeID), meta); err != nil {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: meta.CapacityBytes, NodeExpansionRequired: true}, nil
}

func (d *driver) CreateSnapshot(_ context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	sourceID := req.GetSourceVolumeId()
	if sourceID == "" {
		return nil, status.Error(codes.InvalidArgument, "source volume id is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	snapshotID := id("snap-", req.GetName())
	var meta snapshotMeta
	found, err := readJSON(d.snapshotPath(snapshotID, ".json"), &meta)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading snapshot %s: %v", snapshotID, err)
	}
	if found {
		if meta.SourceVolume != sourceID {
			return nil, status.Errorf(codes.AlreadyExists,
				"snapshot %q exists for volume %s", req.GetName(), meta.SourceVolume)
		}
		return &csi.CreateSnapshotResponse{Snapshot: snapshot(snapshotID, meta)}, nil
	}
	if !d.exists(sourceID) {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", sourceID)
	}
	if err := d.failure("fail-snapshot", sourceID); err != nil {
		return nil, err
	}
	tmp := d.snapshotPath(snapshotID, ".tar.tmp")
	file, err := os.Create(tmp)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	err = archive(d.volumeDir(sourceID), file)
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp, d.snapshotPath(snapshotID, ".tar"))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return nil, status.Errorf(codes.Internal, "archiving volume %s: %v", sourceID, err)
	}
	info, err := os.Stat(d.snapshotPath(snapshotID, ".tar"))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	// Kubernetes reads size_bytes as the snapshot's restoreSize, the least a volume
	// restored from it may ask for: the source's capacity, if it has one.
	var source volumeMeta
	if _, err := readJSON(d.metaPath(sourceID), &source); err != nil {
		return nil, status.Errorf(codes.Internal, "reading volume %s: %v", sourceID, err)
	}
	size := source.CapacityBytes
	if size == 0 {
		size = info.Size()
	}
	meta = snapshotMeta{
		Name:         req.GetName(),
		SourceVolume: sourceID,
		SizeBytes:    size,
		CreatedAt:    time.Now().UTC(),
	}
	if err := writeJSON(d.snapshotPath(snapshotID, ".json"), meta); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	return &csi.CreateSnapshotResponse{Snapshot: snapshot(snapshotID, meta)}, nil
}

func snapshot(snapshotID string, meta snapshotMeta) *csi.Snapshot {
	return &csi.Snapshot{
		SnapshotId:     snapshotID,
		SourceVolumeId: meta.SourceVolume,
		SizeBytes:      meta.SizeBytes,
		CreationTime:   timestamppb.New(meta.CreatedAt),
		ReadyToUse:     true,
	}
}

func (d *driver) DeleteSnapshot(_ context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	snapshotID := req.GetSnapshotId()
	if snapshotID == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot id is required")
	}
	if !validID(snapshotID) {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, ext := range []string{".tar", ".json"} {
		if err := os.Remove(d.snapshotPath(snapshotID, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, status.Errorf(codes.Internal, "%v", err)
		}
	}
	return &csi.DeleteSnapshotResponse{}, nil
}

func (d *driver) ListSnapshots(_ context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	paths, err := filepath.Glob(filepath.Join(d.root, "snapshots", "*.json"))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	var all []*csi.Snapshot
	for _, path := range paths {
		snapshotID := strings.TrimSuffix(filepath.Base(path), ".json")
		if req.GetSnapshotId() != "" && req.GetSnapshotId() != snapshotID {
			continue
		}
		var meta snapshotMeta
		found, err := readJSON(path, &meta)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "reading %s: %v", path, err)
		}
		if !found || (req.GetSourceVolumeId() != "" && req.GetSourceVolumeId() != meta.SourceVolume) {
			continue
		}
		all = append(all, snapshot(snapshotID, meta))
	}
	// Stable order for paging: oldest first, then by id.
	sort.Slice(all, func(i, j int) bool {
		ti, tj := all[i].GetCreationTime().AsTime(), all[j].GetCreationTime().AsTime()
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		return all[i].GetSnapshotId() < all[j].GetSnapshotId()
	})
	start := 0
	if token := req.GetStartingToken(); token != "" {
		start, err = strconv.Atoi(token)
		if err != nil || start < 0 || start > len(all) {
			return nil, status.Errorf(codes.Aborted, "invalid starting token %q", token)
		}
	}
	end := len(all)
	if n := int(req.GetMaxEntries()); n > 0 && start+n < end {
		end = start + n
	}
	resp := &csi.ListSnapshotsResponse{}
	for _, s := range all[start:end] {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s})
	}
	if end < len(all) {
		resp.NextToken = strconv.Itoa(end)
	}
	return resp, nil
}

// noNode is the controller instance's node service, as it was before the node
// service: the least csi-sanity's clean-up needs (NodeGetCapabilities: none;
// NodeUnpublishVolume of a volume never published: done).
type noNode struct {
	csi.UnimplementedNodeServer
	d *driver
}

func (noNode) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (n noNode) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" || req.GetTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and target path are required")
	}
	if !n.d.exists(req.GetVolumeId()) {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil // never published: nothing to undo
}

// --- archives -------------------------------------------------------------------------

// archive writes dir's tree (directories, regular files, symlinks) to w as tar.
func archive(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := entry.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		header, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		header.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(header); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		_, err = io.Copy(tw, file)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// extract unpacks a tar stream made by archive into dir.
func extract(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		header, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(header.Name))
		if !strings.HasPrefix(target, filepath.Clean(dir)+string(os.PathSeparator)) {
			return fmt.Errorf("archive entry %q leaves the volume", header.Name)
		}
		mode := fs.FileMode(header.Mode).Perm()
		switch header.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			file, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(file, tr)
			if closeErr := file.Close(); err == nil {
				err = closeErr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(header.Linkname, target); err != nil {
				return err
			}
		}
	}
}

// --- main -----------------------------------------------------------------------------

func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s %v: %v", info.FullMethod, req, err)
	} else if !strings.HasSuffix(info.FullMethod, "/Probe") {
		log.Printf("%s %v: ok", info.FullMethod, req)
	}
	return resp, err
}

func main() {
	endpoint := flag.String("endpoint", "", "unix socket to serve on (unix:///path or /path)")
	stateDir := flag.String("state-dir", "", "directory holding the volumes and snapshots")
	nodeID := flag.String("node-id", "",
		"serve the node service too, as this node (NodeGetInfo's node id); without it, controller only")
	flag.Parse()
	if *endpoint == "" || *stateDir == "" {
		log.Fatal("--endpoint and --state-dir are required")
	}
	socket := strings.TrimPrefix(*endpoint, "unix://")
	d := &driver{root: *stateDir, nodeID: *nodeID, mounter: newMounter()}
	for _, sub := range []string{"volumes", "snapshots", "fail-delete", "fail-snapshot", "fail-expand"} {
		if err := os.MkdirAll(filepath.Join(d.root, sub), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Fatal(err)
	}
	listener, err := net.Listen("unix", socket)
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(server, d)
	csi.RegisterControllerServer(server, d)
	if d.nodeID != "" {
		csi.RegisterNodeServer(server, d)
	} else {
		csi.RegisterNodeServer(server, noNode{d: d})
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		server.GracefulStop()
	}()
	log.Printf("%s %s serving on %s, state in %s, node service: %q", driverName, driverVersion, socket, d.root, d.nodeID)
	if err := server.Serve(listener); err != nil {
		log.Fatal(err)
	}
}
