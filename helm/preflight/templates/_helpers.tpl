{{/* Chart name, truncated for label values. */}}
{{- define "preflight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "preflight.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "preflight.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "preflight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "preflight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "preflight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* http or https, for probes and the chart test. */}}
{{- define "preflight.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* Refuses values that cannot work, before anything is applied. */}}
{{- define "preflight.validate" -}}
{{- if not (has .Values.store.kind (list "embedded" "redis")) }}
{{- fail (printf "store.kind must be embedded or redis, got %q" .Values.store.kind) }}
{{- end }}
{{- if eq .Values.store.kind "redis" }}
{{- if gt (add (ternary 1 0 (not (empty .Values.redis.urlSecret.name))) (ternary 1 0 (not (empty .Values.redis.sentinel.hosts))) (ternary 1 0 (not (empty .Values.redis.clusterNodes)))) 1 }}
{{- fail "redis.urlSecret.name, redis.sentinel.hosts and redis.clusterNodes: more than one is set; give one" }}
{{- end }}
{{- if and .Values.redis.sentinel.hosts (not .Values.redis.sentinel.masterName) }}
{{- fail "redis.sentinel.hosts needs redis.sentinel.masterName" }}
{{- end }}
{{- if not (or .Values.redis.urlSecret.name .Values.redis.sentinel.hosts .Values.redis.clusterNodes) }}
{{- fail "store.kind=redis needs redis.urlSecret.name (a Secret holding the redis:// URL), redis.sentinel.hosts or redis.clusterNodes" }}
{{- end }}
{{- if and (gt (int .Values.redis.minReplicasAck) 0) (ge (int .Values.redis.replicaAckTimeoutMs) (int .Values.redis.timeoutMs)) }}
{{- fail "redis.replicaAckTimeoutMs must be below redis.timeoutMs" }}
{{- end }}
{{- if not .Values.privacy.keySecret.name }}
{{- fail "store.kind=redis needs privacy.keySecret.name: every replica must hash erased identifiers with the same 32-byte key" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- range $i, $w := .Values.webhooks }}
{{- if or (not $w.name) (not $w.url) (not $w.secretName) (not $w.secretKey) }}
{{- fail (printf "webhooks[%d] needs name, url, secretName and secretKey" $i) }}
{{- end }}
{{- end }}
{{- range $i, $t := .Values.tokens }}
{{- if not (has $t.role (list "check" "write" "admin")) }}
{{- fail (printf "tokens[%d].role must be check, write or admin, got %q" $i $t.role) }}
{{- end }}
{{- if or (not $t.name) (not $t.secretName) (not $t.secretKey) }}
{{- fail (printf "tokens[%d] needs name, secretName and secretKey" $i) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Replicas: one for the embedded store, whatever replicaCount says. */}}
{{- define "preflight.replicas" -}}
{{- if eq .Values.store.kind "embedded" }}1{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}
