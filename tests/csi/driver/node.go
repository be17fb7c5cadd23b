package main

// The node service, served when csi-local runs with --node-id (the instance the kubelet
// calls, in the node's mount namespace; the controller instance runs without it and
// answers only what csi-sanity's clean-up asks: noNode in main.go). Each volume is a
// filesystem on a loop device (volume.go), attached by the controller instance:
//
//	NodeStageVolume    mounts the volume's loop device on the staging path
//	NodePublishVolume  bind-mounts the staging path on the target path (read-only when
//	                   asked, or when the access mode is a reader-only one)
//	NodeUnpublishVolume, NodeUnstageVolume  unmount (and remove the target directory)
//	NodeExpandVolume   grows the mounted filesystem to its device (xfs_growfs), after
//	                   ControllerExpandVolume has grown the device
//	NodeGetVolumeStats statfs of the path: the volume's own bytes and inodes
//
// What is mounted where is read from the mounts themselves, never from a record that a
// restart could lose: a path holds a volume when it is a mount point (mount-utils reads
// the mount table) on the volume's loop device (stat's st_dev).

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

// volumeFor checks the request's volume id and returns the volume's loop device and its
// device number: InvalidArgument when the id is missing, NotFound when there is no such
// volume, FailedPrecondition when it is not attached (the controller instance mounts
// every volume it makes, for as long as the volume exists).
func (d *driver) volumeFor(volumeID string) (string, uint64, error) {
	if volumeID == "" {
		return "", 0, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if !d.exists(volumeID) {
		return "", 0, status.Errorf(codes.NotFound, "volume %q not found", volumeID)
	}
	device, dev, err := loopDevice(d.imagePath(volumeID))
	if err != nil {
		return "", 0, status.Errorf(codes.Internal, "finding the loop device of %s: %v", volumeID, err)
	}
	if device == "" {
		return "", 0, status.Errorf(codes.FailedPrecondition, "volume %s is not attached to a loop device", volumeID)
	}
	return device, dev, nil
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

// mountedWith says whether path is a mount point of the filesystem on device dev, and
// whether it is read-only. A mount point that shows something else is an error for the
// caller.
func (d *driver) mountedWith(path string, dev uint64) (isMount, same, readOnly bool, err error) {
	if isMount, err = d.mounted(path); err != nil || !isMount {
		return isMount, false, false, err
	}
	if same, err = onDevice(path, dev); err != nil {
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
	_, dev, err := d.volumeFor(volumeID)
	if err != nil {
		if isMount, mErr := d.mounted(path); mErr != nil || !isMount {
			return err
		}
		return d.unmount(path)
	}
	isMount, same, _, err := d.mountedWith(path, dev)
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
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
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
	device, dev, err := d.volumeFor(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	isMount, same, _, err := d.mountedWith(staging, dev)
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
	// The same filesystem as the controller instance's mount of it: the kernel shares one
	// superblock between all mounts of a device.
	if err := d.mounter.Mount(device, staging, fsType, nil); err != nil {
		return nil, status.Errorf(codes.Internal, "mounting %s on %s: %v", device, staging, err)
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
	_, dev, err := d.volumeFor(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if isMount, same, _, err := d.mountedWith(staging, dev); err != nil {
		return nil, err
	} else if !isMount || !same {
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s is not staged at %s", req.GetVolumeId(), staging)
	}
	readOnly := req.GetReadonly() || readOnlyMode(req.GetVolumeCapability())
	isMount, same, wasReadOnly, err := d.mountedWith(target, dev)
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
	if err := d.volumeAt(req.GetVolumeId(), path); err != nil {
		return nil, err
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

// volumeAt checks that path shows volumeID's filesystem: NotFound when there is no such
// volume or it is not there.
func (d *driver) volumeAt(volumeID, path string) error {
	_, dev, err := d.volumeFor(volumeID)
	if err != nil {
		return err
	}
	same, err := onDevice(path, dev)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !same) {
		return status.Errorf(codes.NotFound, "volume %s is not at %s", volumeID, path)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	return nil
}

// NodeExpandVolume grows the filesystem mounted at the volume path to the size of its
// device, which ControllerExpandVolume grew. Online: the volume stays mounted and in use.
func (d *driver) NodeExpandVolume(_ context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	path := req.GetVolumePath()
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume id is required")
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "block volumes are not supported")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.exists(req.GetVolumeId()) {
		return nil, status.Errorf(codes.NotFound, "volume %q not found", req.GetVolumeId())
	}
	if path == "" {
		return nil, status.Error(codes.InvalidArgument, "volume path is required")
	}
	if err := d.volumeAt(req.GetVolumeId(), path); err != nil {
		return nil, err
	}
	// xfs_growfs takes the mount point, and grows the filesystem to its device's size.
	if err := run("xfs_growfs", "-d", path); err != nil {
		return nil, status.Errorf(codes.Internal, "growing the filesystem of %s: %v", req.GetVolumeId(), err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", path, err)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: int64(st.Blocks) * st.Bsize}, nil
}
