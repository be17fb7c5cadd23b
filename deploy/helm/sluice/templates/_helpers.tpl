{{/* The release's base name: "sluice" for a release named sluice. */}}
{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.operatorName" -}}{{ include "sluice.fullname" . }}-operator{{- end -}}
{{- define "sluice.apiName" -}}{{ include "sluice.fullname" . }}-api{{- end -}}
{{- define "sluice.apiScheme" -}}{{ .Values.api.tls.enabled | ternary "https" "http" }}{{- end -}}
{{- define "sluice.apiTlsSecret" -}}
{{- .Values.api.tls.secretName | default (printf "%s-tls" (include "sluice.apiName" .)) -}}
{{- end -}}

{{- define "sluice.operatorAccount" -}}
{{- .Values.serviceAccount.operatorName | default (include "sluice.operatorName" .) -}}
{{- end -}}
{{- define "sluice.apiAccount" -}}
{{- .Values.serviceAccount.apiName | default (include "sluice.apiName" .) -}}
{{- end -}}

{{- define "sluice.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels on every object; the selector labels are the kustomize base's. */}}
{{- define "sluice.labels" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/part-of: sluice
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "sluice.selector" -}}
app.kubernetes.io/name: sluice
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The pod and container security settings of both Deployments ("restricted"). */}}
{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
