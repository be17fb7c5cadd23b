package main

// Each volume is a filesystem of its own: a sparse image file of the volume's capacity,
// formatted XFS, attached to a loop device and mounted. So a pod that writes past the
// capacity gets ENOSPC, and statfs of any mount of the volume (NodeGetVolumeStats) gives
// the volume's own bytes and inodes.
//
// Why XFS and not ext4: growing a mounted ext4 (resize2fs, EXT4_IOC_RESIZE_FS) needs
// CAP_SYS_RESOURCE, which the machines this runs on do not have in their bounding set
// ("resize2fs: Permission denied to resize filesystem"); xfs_growfs needs CAP_SYS_ADMIN
// only. btrfs refuses to resize below 256 MiB. mkfs.xfs makes nothing below 300 MB unless
// it runs under xfstests (TEST_DIR, TEST_DEV and QA_CHECK_FS all set, as here): the kernel
// mounts and grows such filesystems all the same, down to mkfs's floor of 4096 blocks
// (16 MiB).
//
// The loop device is attached by mount(8) -o loop, which sets autoclear: it detaches by
// itself when its last mount goes (the controller's on volumes/<id>, the node's staging
// mount, or their whole mount namespace). Nothing else holds it.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	fsType = "xfs"
	// mkfs.xfs's floor (4096 blocks of 4 KiB); smaller requests get this much.
	minCapacity int64 = 16 << 20
	// When the request names no size.
	defaultCapacity int64 = 64 << 20
	// Capacities are whole 4 KiB blocks (a loop device's size is counted in sectors).
	capacityUnit int64 = 4096
)

func (d *driver) imagePath(volumeID string) string {
	return d.volumeDir(volumeID) + ".img"
}

func (d *driver) metaPath(volumeID string) string {
	return d.volumeDir(volumeID) + ".json"
}

// exists says whether volumeID names a volume: its record is written last by CreateVolume
// and removed last by DeleteVolume.
func (d *driver) exists(volumeID string) bool {
	if !validID(volumeID) {
		return false
	}
	_, err := os.Stat(d.metaPath(volumeID))
	return err == nil
}

// run runs a command; its output goes into the error.
func run(name string, args ...string) error {
	return runEnv(nil, name, args...)
}

// runEnv runs a command with env added to the driver's environment.
func runEnv(env []string, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// makeFilesystem creates image as a sparse file of size bytes, formatted.
func makeFilesystem(image string, size int64) error {
	file, err := os.OpenFile(image, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = file.Truncate(size)
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	// Small filesystems: mkfs.xfs allows them to xfstests (see above).
	small := []string{"TEST_DIR=" + filepath.Dir(image), "TEST_DEV=" + image, "QA_CHECK_FS=1"}
	return runEnv(small, "mkfs."+fsType, "-q", "-f", image)
}

// mountImage attaches image to a free loop device (autoclear) and mounts it on dir.
func mountImage(image, dir string) error {
	return run("mount", "-t", fsType, "-o", "loop", image, dir)
}

// loopDevice finds the loop device image is attached to: its path and its device number
// (what stat reports as st_dev for a file on the mounted filesystem). "" when there is none.
func loopDevice(image string) (string, uint64, error) {
	backings, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return "", 0, err
	}
	for _, backing := range backings {
		data, err := os.ReadFile(backing)
		if errors.Is(err, fs.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			return "", 0, err
		}
		if strings.TrimSpace(string(data)) != image {
			continue
		}
		block := filepath.Dir(filepath.Dir(backing))
		numbers, err := os.ReadFile(filepath.Join(block, "dev"))
		if err != nil {
			return "", 0, err
		}
		var major, minor uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(numbers)), "%d:%d", &major, &minor); err != nil {
			return "", 0, fmt.Errorf("%s: %v", block, err)
		}
		return "/dev/" + filepath.Base(block), unix.Mkdev(major, minor), nil
	}
	return "", 0, nil
}

// onDevice says whether path is on the filesystem of device number dev.
func onDevice(path string, dev uint64) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, err
	}
	return st.Dev == dev, nil
}

// roundUp rounds n up to a multiple of unit.
func roundUp(n, unit int64) int64 {
	return (n + unit - 1) / unit * unit
}
