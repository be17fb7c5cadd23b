package main

// The node service, served when csi-local runs with --node-id (the instance the kubelet
// calls, in the node's mount namespace; the controller instance runs without it and
// answers only what csi-sanity's clean-up asks: noNode in main.go). Volumes are directories under the shared --state-dir:
//
//	NodeStageVolume    bind-mounts volumes/<id> on the staging path
//	NodePublishVolume  bind-mounts the staging path on the target path (read-only when
//	                   asked, or when the access mode is a reader-only one)
//	NodeUnpublishVolume, NodeUnstageVolume  unmount (and remove the target directory)
//	NodeGetVolumeStats statfs of the path: bytes and inodes of the filesystem that holds
//	                   the state directory (a volume is a directory, not a filesystem of
//	                   its own, so its capacity is not what statfs sees)
//
// Upstream's hostpath driver stages by recording the staging path only and publishes by
// bind-mounting the volume's directory; csi-local mounts at stage as well, as drivers of
// real devices do, so that the staging path holds the volume (NodeGetVolumeStats answers
// for it too) and a publish of a volume not staged is refused.
//
// What is mounted where is read from the mounts themselves, never from a record that a
// restart could lose: a path holds a volume when it is a mount point (mount-utils reads
// the mount table) and has the volume directory's device and inode number.

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
)

// volumeFor checks the request's volume id and returns the volume's directory:
// InvalidArgument when it is missing, NotFound when there is no such volume.
func (d *driver) volumeFor(volumeID string) (string, error) {
	if volumeID == "" {
		return "", status.Error(codes.InvalidArgument, "volume id is required")
	}
	if !validID(volumeID) || !isDir(d.volumeDir(volumeID)) {
		return "", status.Errorf(codes.NotFound, "volume %q not found", volumeID)
	}
	return d.volumeDir(volumeID), nil
}

// checkCapability refuses what csi-local cannot mount: no capability, or a block volume.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return status.Error(codes.InvalidArgument, "volume capability is required")
	}
	if c.GetBlock() != nil {
		return status.Error(codes.InvalidArgument, "block volumes are not supported")
	}
	if c.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "volume capability has no access type")
	}
	return nil
}

// mounted says whether path is a mount point; a missing path is not one.
func (d *driver) mounted(path string) (bool, error) {
	is, err := d.mounter.IsMountPoint(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, status.Errorf(codes.Internal, "checking mount point %s: %v", path, err)
	}
	return is, nil
}

// holds says whether path shows the directory dir (the same device and inode): true for
// dir itself and for a bind mount of it.
func holds(path, dir string) (bool, error) {
	a, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	b, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// mountedWith says whether path is a mount point that shows dir, and whether it is
// read-only. A mount point that shows something else is an error for the caller.
func (d *driver) mountedWith(path, dir string) (isMount, same, readOnly bool, err error) {
	if isMount, err = d.mounted(path); err != nil || !isMount {
		return isMount, false, false, err
	}
	if same, err = holds(path, dir); err != nil {
		return true, false, false, status.Errorf(codes.Internal, "%v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return true, same, false, status.Errorf(codes.Internal, "statfs %s: %v", path, err)
	}
	return true, same, st.Flags&unix.ST_RDONLY != 0, nil
}

// unmount unmounts path if it is a mount point.
func (d *driver) unmount(path string) error {
	isMount, err := d.mounted(path)
	if err != nil || !isMount {
		return err
	}
	if err := d.mounter.Unmount(path); err != nil {
		return status.Errorf(codes.Internal, "unmounting %s: %v", path, err)
	}
	return nil
}

var errOtherVolume = errors.New("another volume is mounted there")

// unmountVolume unmounts volumeID's mount at path, if there is one. NotFound for an
// unknown volume with nothing mounted at path; but a volume deleted while still mounted
// would leave its mount behind for good, so a mount at path is undone all the same.
// errOtherVolume (no change) when path shows another volume.
func (d *driver) unmountVolume(volumeID, path string) error {
	dir, err := d.volumeFor(volumeID)
	if err != nil {
		if isMount, mErr := d.mounted(path); mErr != nil || !isMount {
			return err
		}
		return d.unmount(path)
	}
	isMount, same, _, err := d.mountedWith(path, dir)
	switch {
	case err != nil:
		return err
	case !isMount:
		return nil
	case !same:
		return errOtherVolume
	}
	return d.unmount(path)
}

func readOnlyMode(c *csi.VolumeCapability) bool {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
		csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return true
	}
	return false
}

func (d *driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	// No accessible topology: the controller offers no VOLUME_ACCESSIBILITY_CONSTRAINTS
	// (every volume is reachable from the one node that shares the state directory).
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID}, nil
}

func (d *driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, c := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	} {
		caps = append(caps, &csi.NodeServiceCapability{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}},
		})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

func (d *driver) NodeStageVolume(_ context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	staging := req.GetStagingTargetPath()
	if req.GetVolumeId() == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and staging target path are required")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir, err := d.volumeFor(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	isMount, same, _, err := d.mountedWith(staging, dir)
	if err != nil {
		return nil, err
	}
	if isMount {
		if !same {
			return nil, status.Errorf(codes.AlreadyExists,
				"staging path %s holds another volume than %s", staging, req.GetVolumeId())
		}
		return &csi.NodeStageVolumeResponse{}, nil // staged already
	}
	// The CO creates the staging directory; make it if it did not.
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	if err := d.mounter.Mount(dir, staging, "", []string{"bind"}); err != nil {
		return nil, status.Errorf(codes.Internal, "bind-mounting %s on %s: %v", dir, staging, err)
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

func (d *driver) NodeUnstageVolume(_ context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	staging := req.GetStagingTargetPath()
	if req.GetVolumeId() == "" || staging == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and staging target path are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.unmountVolume(req.GetVolumeId(), staging); err != nil && !errors.Is(err, errOtherVolume) {
		return nil, err // (another volume staged there: this one is not, done)
	}
	// The staging directory is the CO's: it stays.
	return &csi.NodeUnstageVolumeResponse{}, nil
}

func (d *driver) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	target, staging := req.GetTargetPath(), req.GetStagingTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and target path are required")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	if staging == "" {
		// STAGE_UNSTAGE_VOLUME is offered: the CO must stage first (spec: FAILED_PRECONDITION).
		return nil, status.Error(codes.FailedPrecondition, "staging target path is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir, err := d.volumeFor(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if isMount, same, _, err := d.mountedWith(staging, dir); err != nil {
		return nil, err
	} else if !isMount || !same {
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s is not staged at %s", req.GetVolumeId(), staging)
	}
	readOnly := req.GetReadonly() || readOnlyMode(req.GetVolumeCapability())
	isMount, same, wasReadOnly, err := d.mountedWith(target, dir)
	if err != nil {
		return nil, err
	}
	if isMount {
		if !same || wasReadOnly != readOnly {
			return nil, status.Errorf(codes.AlreadyExists,
				"target path %s is published already, with another volume or read-only setting", target)
		}
		return &csi.NodePublishVolumeResponse{}, nil // published already, the same way
	}
	// The CO makes the parent; the target is the SP's to make (and to remove on unpublish).
	if err := os.Mkdir(target, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	options := []string{"bind"}
	if readOnly {
		options = append(options, "ro")
	}
	options = append(options, req.GetVolumeCapability().GetMount().GetMountFlags()...)
	if err := d.mounter.Mount(staging, target, "", options); err != nil {
		// A read-only remount that failed leaves the bind mount: undo it.
		_ = d.unmount(target)
		return nil, status.Errorf(codes.Internal, "bind-mounting %s on %s: %v", staging, target, err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *driver) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if req.GetVolumeId() == "" || target == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and target path are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.unmountVolume(req.GetVolumeId(), target); err != nil {
		if errors.Is(err, errOtherVolume) {
			return &csi.NodeUnpublishVolumeResponse{}, nil // not published there: done
		}
		return nil, err
	}
	// The spec: the SP deletes the directory it made. os.Remove, not RemoveAll: should
	// the path still show the volume somehow, its data must not go with it.
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "removing target path: %v", err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (d *driver) NodeGetVolumeStats(_ context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	path := req.GetVolumePath()
	if req.GetVolumeId() == "" || path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id and volume path are required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir, err := d.volumeFor(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	same, err := holds(path, dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !same) {
		return nil, status.Errorf(codes.NotFound, "volume %s is not at %s", req.GetVolumeId(), path)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", path, err)
	}
	size := st.Bsize
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{
			Unit:      csi.VolumeUsage_BYTES,
			Total:     int64(st.Blocks) * size,
			Available: int64(st.Bavail) * size,
			Used:      int64(st.Blocks-st.Bfree) * size,
		},
		{
			Unit:      csi.VolumeUsage_INODES,
			Total:     int64(st.Files),
			Available: int64(st.Ffree),
			Used:      int64(st.Files - st.Ffree),
		},
	}}, nil
}

// newMounter is mount-utils' mounter: it runs mount(8) and umount(8).
func newMounter() mount.Interface {
	return mount.New("")
}
