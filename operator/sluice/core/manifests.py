"""Pure builders of the objects a Pipeline owns, and of the Events recorded on it."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sluice.api import v1alpha1 as api
from sluice.core.labels import (
    PIPELINE_LABEL,
    PIPELINE_UID_LABEL,
    SNAPSHOT_API_GROUP,
    SNAPSHOT_API_VERSION,
    SNAPSHOT_CLEAR_REQUEST,
    SNAPSHOT_EXPIRES_AT,
    SNAPSHOT_FROM,
    SNAPSHOT_OF_CLAIM,
    STORAGE_MOUNT_PATH,
    claim_name,
    snapshot_name,
)

if TYPE_CHECKING:  # snapshots builds its VolumeSnapshots here: no import cycle at run time
    from sluice.core.snapshots import RestoreSource

CONTAINER_NAME = "pipeline"
VOLUME_NAME = "storage"
# The pipeline's uid, gid and fsGroup under podSecurity Restricted: the first unprivileged
# user of the usual base images (Debian's and Ubuntu's adduser start there), numeric so the
# kubelet can check runAsNonRoot whatever USER the image names (or none: root).
PIPELINE_USER = 1000


def pod_security_context(spec: api.PipelineSpec) -> dict[str, Any] | None:
    """What the "restricted" Pod Security Standard asks of the pod; fsGroup makes the
    volume's root group-writable for PIPELINE_USER where the volume plugin supports it."""
    if spec.pod_security == api.PodSecurity.IMAGE_DEFAULT:
        return None
    return {
        "runAsNonRoot": True,
        "runAsUser": PIPELINE_USER,
        "runAsGroup": PIPELINE_USER,
        "fsGroup": PIPELINE_USER,
        # Only the volume's root is checked: no recursive chown of a large volume per start.
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(spec: api.PipelineSpec) -> dict[str, Any] | None:
    """The container's part: the engine writes only its storage (STORAGE_MOUNT_PATH)."""
    if spec.pod_security == api.PodSecurity.IMAGE_DEFAULT:
        return None
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }


def selector_labels(name: str, uid: str) -> dict[str, str]:
    return {PIPELINE_LABEL: name, PIPELINE_UID_LABEL: uid}


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pipeline: str, uid: str, **extra: Any) -> dict[str, Any]:
    return {
        "labels": selector_labels(pipeline, uid),
        "ownerReferences": [owner_reference(pipeline, uid)],
        **extra,
    }


def persistent_volume_claim(
    name: str,
    uid: str,
    storage: api.StorageSpec,
    claim_generation: int,
    restore: RestoreSource | None = None,
) -> dict[str, Any]:
    """A fresh claim, named by `claim_name` (a fixed name per storage generation); with
    `restore`, its volume is provisioned from that VolumeSnapshot (`dataSourceRef`), at
    least as large as the snapshot's restoreSize."""
    size = restore.size if restore else str(storage.size)
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if storage.storage_class_name:
        spec["storageClassName"] = storage.storage_class_name
    if restore:
        spec["dataSourceRef"] = {
            "apiGroup": SNAPSHOT_API_GROUP,
            "kind": "VolumeSnapshot",
            "name": restore.snapshot,
        }
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(name, uid, name=claim_name(name, uid, claim_generation)),
        "spec": spec,
    }


def headless_service(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, uid, name=name),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(name, uid),
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
        },
    }


def container(spec: api.PipelineSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "ports": [{"name": "http", "containerPort": 8080}],
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": STORAGE_MOUNT_PATH}],
    }
    if spec.resources:
        resources = spec.resources.model_dump(exclude_none=True)
        out["resources"] = {
            kind: {key: str(value) for key, value in values.items()}
            for kind, values in resources.items()
        }
    return out


def stateful_set(name: str, uid: str, spec: api.PipelineSpec, claim: str) -> dict[str, Any]:
    """One replica mounting the claim the operator owns (no volumeClaimTemplate on purpose:
    its fixed claim name would re-adopt a detached claim on the next start).

    The securityContexts are set here only, not in `container` (UpdateContainer's patch of
    a running StatefulSet): a pipeline gets them when it next starts, never half of them on
    an image change of a pod that was started without them."""
    labels = selector_labels(name, uid)
    main = container(spec)
    if (restricted := container_security_context(spec)) is not None:
        main["securityContext"] = restricted
    pod_spec: dict[str, Any] = {
        "containers": [main],
        "volumes": [{"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}}],
    }
    if (pod_context := pod_security_context(spec)) is not None:
        pod_spec["securityContext"] = pod_context
    if spec.termination_grace_period_seconds is not None:
        pod_spec["terminationGracePeriodSeconds"] = spec.termination_grace_period_seconds
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(name, uid, name=name),
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec,
            },
        },
    }


def mounted_claim(statefulset: dict[str, Any]) -> str | None:
    volumes = statefulset.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
    for volume in volumes:
        if volume.get("name") == VOLUME_NAME and "persistentVolumeClaim" in volume:
            return str(volume["persistentVolumeClaim"]["claimName"])
    return None


def running_container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for c in containers or []:
        if c.get("name") == CONTAINER_NAME:
            return dict(c)
    return {}


def event(
    pipeline: dict[str, Any],
    type_: str,
    reason: str,
    message: str,
    component: str,
    now: str,
    once: str | None = None,
) -> dict[str, Any]:
    """A core/v1 Event on the pipeline, as `kubectl describe pipeline` lists them. With
    `once` (plan.Event.once), a name of its own instead of a generated one."""
    meta = pipeline["metadata"]
    named = (
        {"name": event_name(meta, reason, once)} if once else {"generateName": f"{meta['name']}."}
    )
    return {
        "metadata": {**named, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
    }


def event_name(meta: dict[str, Any], reason: str, once: str) -> str:
    """`<pipeline>.<reason>-<digest of UID and transition>`: the same for a retried step,
    another for another pipeline of that name or another transition."""
    digest = hashlib.sha256(f"{meta['uid']}/{reason}/{once}".encode()).hexdigest()[:12]
    suffix = f".{reason.lower()}-{digest}"
    return f"{meta['name'][: 253 - len(suffix)]}{suffix}"


def volume_snapshot(
    pipeline: str,
    namespace: str,
    uid: str,
    claim: str,
    expires_at: str,
    clear_request: str | None,
    volume_snapshot_class_name: str | None,
) -> dict[str, Any]:
    """The snapshot a clear takes of a claim (contract rule 18). No ownerReference: it
    outlives a deleted Pipeline until it expires; its labels carry the pipeline's name (to
    find it, also after the Pipeline is gone) and UID (to know a 409 is ours)."""
    annotations = {
        SNAPSHOT_OF_CLAIM: claim,
        SNAPSHOT_EXPIRES_AT: expires_at,
        SNAPSHOT_FROM: f"{namespace}/{pipeline}",
    }
    if clear_request:
        annotations[SNAPSHOT_CLEAR_REQUEST] = clear_request
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": claim}}
    if volume_snapshot_class_name:
        # Unset: the snapshot controller picks the cluster's default class.
        spec["volumeSnapshotClassName"] = volume_snapshot_class_name
    return {
        "apiVersion": f"{SNAPSHOT_API_GROUP}/{SNAPSHOT_API_VERSION}",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot_name(pipeline, claim),
            "namespace": namespace,
            "labels": selector_labels(pipeline, uid),
            "annotations": annotations,
        },
        "spec": spec,
    }
