"""The storage-growth ValidatingAdmissionPolicy, installed beside the CRD (crds/): growing
spec.storage.size while storage is in use is allowed only where the claim's StorageClass
allows volume expansion (contract rule 12). A CRD rule cannot see a StorageClass; this
policy takes every StorageClass as a parameter (a binding whose paramRef selects them all,
so each is evaluated) and refuses the growth at apply time against the one the pipeline
names, or the cluster's default when it names none. Likewise spec.storage.autoscaling, when
it is set or changed, or the class changes under it: it can only ever grow the claim."""

from __future__ import annotations

from typing import Any

import yaml

from sluice.api import v1alpha1 as api

POLICY_FILE = "sluice.dev_storage-growth-policy.yaml"
NAME = f"{api.PLURAL}.{api.GROUP}-storage-growth"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def _size(obj: str) -> str:
    return f"quantity(string({obj}.spec.storage.size).trim())"


def documents() -> list[dict[str, Any]]:
    in_use = (
        "request.operation == 'UPDATE' && has(oldObject.status) && has(oldObject.status.storage)"
        " && has(oldObject.status.storage.status)"
        " && oldObject.status.storage.status != 'Cleared'"
    )
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": NAME},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [api.GROUP],
                        "apiVersions": [api.VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [api.PLURAL],
                    }
                ]
            },
            "variables": [
                {
                    "name": "grows",
                    "expression": f"{in_use}"
                    f" && {_size('object')}.isGreaterThan({_size('oldObject')})",
                },
                {
                    # Set now, and new: created with it, added, changed, or its class changed.
                    # (Not every update: an admin turning expansion off later must not make
                    # the Pipeline's every other change fail.)
                    "name": "autoscalingAsked",
                    "expression": "has(object.spec.storage.autoscaling)"
                    " && (request.operation == 'CREATE'"
                    " || !has(oldObject.spec.storage.autoscaling)"
                    " || oldObject.spec.storage.autoscaling != object.spec.storage.autoscaling"
                    " || has(oldObject.spec.storage.storageClassName)"
                    " != has(object.spec.storage.storageClassName)"
                    " || (has(object.spec.storage.storageClassName)"
                    " && oldObject.spec.storage.storageClassName"
                    " != object.spec.storage.storageClassName))",
                },
                {
                    "name": "namedClass",
                    "expression": "has(object.spec.storage.storageClassName)"
                    " ? params.metadata.name == object.spec.storage.storageClassName"
                    " : has(params.metadata.annotations)"
                    f" && '{DEFAULT_CLASS}' in params.metadata.annotations"
                    f" && params.metadata.annotations['{DEFAULT_CLASS}'] == 'true'",
                },
            ],
            "validations": [
                {
                    "expression": "!variables.grows || !variables.namedClass"
                    " || (has(params.allowVolumeExpansion) && params.allowVolumeExpansion)",
                    "messageExpression": "'spec.storage.size can only grow while storage is in "
                    "use where its StorageClass allows volume expansion, and StorageClass ' + "
                    "params.metadata.name + ' does not (allowVolumeExpansion); stop the "
                    "pipeline and clear its storage to change the size "
                    "(EditRestrictedToClearedStorage)'",
                    "reason": "Invalid",
                },
                {
                    "expression": "!variables.autoscalingAsked || !variables.namedClass"
                    " || (has(params.allowVolumeExpansion) && params.allowVolumeExpansion)",
                    "messageExpression": "'spec.storage.autoscaling needs a StorageClass that "
                    "allows volume expansion, and StorageClass ' + params.metadata.name + "
                    "' does not (allowVolumeExpansion): remove spec.storage.autoscaling, or use "
                    "a class that can expand (changing the class needs storage Cleared)'",
                    "reason": "Invalid",
                },
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": NAME},
        "spec": {
            "policyName": NAME,
            "validationActions": ["Deny"],
            # Every StorageClass is a parameter; none (no class at all): nothing to refuse.
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
        },
    }
    return [policy, binding]


def render() -> str:
    header = "# Generated from operator/sluice/api/policy.py by `make crds`. Do not edit.\n"
    return header + yaml.safe_dump_all(documents(), sort_keys=False, width=100)
