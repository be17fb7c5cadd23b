"""Build an OCI image archive (one uncompressed layer) from files on this machine.

What ``ctr -n k8s.io images import`` (containerd 1.6 and 2.x) needs to give the image its
name: the manifest's descriptor in ``index.json`` carries ``io.containerd.image.name`` (the
full reference, used as is) and ``org.opencontainers.image.ref.name`` (the tag, the OCI
layout's own convention: without ``--base-name`` ctr drops names that come only from it),
and a ``platform`` matching the machine's so that ctr unpacks it for the CRI.

The archive is reproducible: fixed modification times, owners and order, so the same files
give the same digests (and the node re-imports nothing new).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
# Reproducible archives: every entry gets this time (1 Jan 2000) and root's ownership.
MTIME = 946684800


@dataclass(frozen=True)
class ImageSpec:
    """What goes into an image: `files` maps a file on this machine to its absolute path in
    the image (its content is copied, symlinks followed; modes kept); `dirs` are empty
    directories to create (e.g. a volume's mount point)."""

    name: str
    files: Mapping[Path, PurePosixPath]
    entrypoint: Sequence[str]
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    dirs: Sequence[PurePosixPath] = ()
    working_dir: str = "/"
    architecture: str = "amd64"
    os: str = "linux"


def _add_dir(tar: tarfile.TarFile, path: PurePosixPath, seen: set[str]) -> None:
    for parent in reversed([path, *path.parents]):
        name = str(parent).lstrip("/")
        if not name or name in seen:
            continue
        seen.add(name)
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o1777 if name == "tmp" else 0o755
        info.mtime = MTIME
        tar.addfile(info)


def layer_tar(spec: ImageSpec) -> bytes:
    """The image's single layer: its directories, then its files, in a fixed order."""
    buffer = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in sorted({PurePosixPath("/tmp"), *spec.dirs}):
            _add_dir(tar, directory, seen)
        for source, target in sorted(spec.files.items(), key=lambda item: str(item[1])):
            if not target.is_absolute():
                raise ValueError(f"{target}: paths in the image must be absolute")
            _add_dir(tar, target.parent, seen)
            data = Path(source).read_bytes()
            info = tarfile.TarInfo(str(target).lstrip("/"))
            info.size = len(data)
            info.mode = Path(source).stat().st_mode & 0o7777
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    info = tarfile.TarInfo(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    info.size = len(data)
    info.mtime = MTIME
    tar.addfile(info, io.BytesIO(data))
    return digest


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_archive(spec: ImageSpec, out: Path) -> Path:
    """Write the image as an OCI layout tar at `out` (written whole, then renamed)."""
    if ":" not in spec.name.rsplit("/", 1)[-1]:
        raise ValueError(f"{spec.name}: give the image a tag")
    layer = layer_tar(spec)
    layer_digest = f"sha256:{hashlib.sha256(layer).hexdigest()}"
    config = _json(
        {
            "architecture": spec.architecture,
            "os": spec.os,
            "created": "2000-01-01T00:00:00Z",
            "config": {
                "Entrypoint": list(spec.entrypoint),
                "Cmd": list(spec.cmd),
                "Env": [f"{k}={v}" for k, v in sorted(spec.env.items())],
                "WorkingDir": spec.working_dir,
            },
            # Uncompressed layer: its diff ID is its own digest.
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    )
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        config_digest = _blob(tar, config)
        _blob(tar, layer)
        manifest = _json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": {
                    "mediaType": CONFIG_MEDIA_TYPE,
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": len(layer)}
                ],
            }
        )
        manifest_digest = _blob(tar, manifest)
        index = _json(
            {
                "schemaVersion": 2,
                "mediaType": INDEX_MEDIA_TYPE,
                "manifests": [
                    {
                        "mediaType": MANIFEST_MEDIA_TYPE,
                        "digest": manifest_digest,
                        "size": len(manifest),
                        "platform": {"architecture": spec.architecture, "os": spec.os},
                        "annotations": {
                            CONTAINERD_NAME: spec.name,
                            OCI_REF_NAME: spec.name.rsplit(":", 1)[1],
                        },
                    }
                ],
            }
        )
        for name, data in (
            ("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
            ("index.json", index),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def archive_name(image: str) -> str:
    """A file name for an image's archive: `localhost/sluice/pause:0.1.0` ->
    `pause_0.1.0.oci.tar`."""
    return image.rsplit("/", 1)[-1].replace(":", "_") + ".oci.tar"
