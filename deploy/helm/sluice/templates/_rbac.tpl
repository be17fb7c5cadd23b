{{/* The operator's rules, shared by its ClusterRole and Roles (rbac.yaml). */}}
{{- define "sluice.operatorClusterRules" -}}
- apiGroups: [""]
  resources: ["persistentvolumes"]
  verbs: ["get", "list", "watch"]
# A PV's VolumeFailedDelete Events, in namespace default (see deploy/rbac.yaml).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list"]
# Storage autoscaling's volume usage, from the kubelets' /stats/summary (see deploy/rbac.yaml).
- apiGroups: [""]
  resources: ["nodes/proxy"]
  verbs: ["get"]
{{- end -}}
{{- define "sluice.operatorNamespacedRules" -}}
- apiGroups: ["sluice.dev"]
  resources: ["pipelines"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["sluice.dev"]
  resources: ["pipelines/status"]
  verbs: ["patch"]
- apiGroups: ["sluice.dev"]
  resources: ["pipelines/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# VolumeSnapshots of the safety net (spec.storage.snapshotBeforeClear; see deploy/rbac.yaml).
- apiGroups: ["snapshot.storage.k8s.io"]
  resources: ["volumesnapshots"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
