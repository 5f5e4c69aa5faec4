{{/* Chart name. */}}
{{- define "thumbnail.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name, plus the chart name unless it already holds it. */}}
{{- define "thumbnail.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value. */}}
{{- define "thumbnail.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: only labels that never change over the release's life, because Deployment,
StatefulSet and PodDisruptionBudget selectors are immutable. Call with (dict "ctx" $ "component" "api").
*/}}
{{- define "thumbnail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thumbnail.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's objects. Call with (dict "ctx" $ "component" "api"). */}}
{{- define "thumbnail.labels" -}}
{{ include "thumbnail.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "thumbnail.name" .ctx }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "thumbnail.chart" .ctx }}
{{- end }}

{{/* Labels of objects that belong to no single component (CRD, shared ConfigMap and Secret). */}}
{{- define "thumbnail.commonLabels" -}}
app.kubernetes.io/name: {{ include "thumbnail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ include "thumbnail.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "thumbnail.chart" . }}
{{- end }}

{{/* The image of both binaries. */}}
{{- define "thumbnail.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* ServiceAccount names. */}}
{{- define "thumbnail.apiServiceAccount" -}}
{{- printf "%s-api" (include "thumbnail.fullname" .) }}
{{- end }}
{{- define "thumbnail.operatorServiceAccount" -}}
{{- printf "%s-operator" (include "thumbnail.fullname" .) }}
{{- end }}
{{- define "thumbnail.renderServiceAccount" -}}
{{- printf "%s-render" (include "thumbnail.fullname" .) }}
{{- end }}

{{/* Name of the Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and DATABASE_URL. */}}
{{- define "thumbnail.secretName" -}}
{{- default (include "thumbnail.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* Service names of the dev PostgreSQL and MinIO. */}}
{{- define "thumbnail.postgresqlName" -}}
{{- printf "%s-postgresql" (include "thumbnail.fullname" .) }}
{{- end }}
{{- define "thumbnail.minioName" -}}
{{- printf "%s-minio" (include "thumbnail.fullname" .) }}
{{- end }}

{{/* S3_ENDPOINT_URL: the configured one, else the dev MinIO's. */}}
{{- define "thumbnail.s3Endpoint" -}}
{{- if .Values.s3.endpointUrl }}
{{- .Values.s3.endpointUrl }}
{{- else if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "thumbnail.minioName" .) }}
{{- end }}
{{- end }}

{{/* DATABASE_URL: the configured one, else the dev PostgreSQL's. */}}
{{- define "thumbnail.databaseUrl" -}}
{{- if .Values.secret.databaseUrl }}
{{- .Values.secret.databaseUrl }}
{{- else if .Values.postgresql.enabled }}
{{- $a := .Values.postgresql.auth }}
{{- printf "postgres://%s:%s@%s:5432/%s" (urlquery $a.username) (urlquery $a.password) (include "thumbnail.postgresqlName" .) $a.database }}
{{- end }}
{{- end }}

{{/* PUBLIC_URL: the configured one, else from the ingress. */}}
{{- define "thumbnail.publicUrl" -}}
{{- if .Values.api.publicUrl }}
{{- .Values.api.publicUrl }}
{{- else if .Values.api.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.api.ingress.tlsSecretName "")) .Values.api.ingress.host }}
{{- end }}
{{- end }}

{{/* Environment shared by both components: the ConfigMap and the Secret. */}}
{{- define "thumbnail.envFrom" -}}
- configMapRef:
    name: {{ include "thumbnail.fullname" . }}
- secretRef:
    name: {{ include "thumbnail.secretName" . }}
{{- end }}

{{/* The Secret holding ADMIN_API_KEY (auth.mode api-key). */}}
{{- define "thumbnail.adminKeySecret" -}}
{{- default (printf "%s-admin-key" (include "thumbnail.fullname" .)) .Values.auth.adminKey.existingSecret }}
{{- end }}

{{/* Annotations that restart pods when their configuration changes. */}}
{{- define "thumbnail.configChecksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secret.existingSecret }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
The namespace of the ThumbnailJobs the API creates: the operator's watchNamespace when set (the
operator would not see them anywhere else), else the release namespace.
*/}}
{{- define "thumbnail.jobNamespace" -}}
{{- default .Release.Namespace .Values.operator.watchNamespace -}}
{{- end }}
