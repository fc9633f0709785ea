{{/*
Names and labels shared by every object.

Selectors use app.kubernetes.io/name only, as deploy/k8s/base does: a
Deployment's selector is immutable, so keeping the base's lets a release
take over objects that Kustomize created. A second release in the same
namespace therefore needs its own nameOverride.
*/}}

{{- define "highload.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: the release name, or release-chart when they differ. */}}
{{- define "highload.fullname" -}}
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

{{- define "highload.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "highload.selectorLabels" -}}
app.kubernetes.io/name: {{ include "highload.name" . }}
{{- end }}

{{/* The base's labels (name, part-of) plus Helm's own. */}}
{{- define "highload.labels" -}}
{{ include "highload.selectorLabels" . }}
{{ include "highload.commonLabels" . }}
{{- end }}

{{/* Without the name: the base's generated ConfigMap carries only part-of. */}}
{{- define "highload.commonLabels" -}}
app.kubernetes.io/part-of: highload
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
helm.sh/chart: {{ include "highload.chart" . }}
{{- end }}

{{/* The pods' labels: no chart or version label, so that upgrading the
chart alone does not roll the pods. */}}
{{- define "highload.podLabels" -}}
{{ include "highload.selectorLabels" . }}
app.kubernetes.io/component: api
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "highload.configMapName" -}}
{{- printf "%s-config" (include "highload.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "highload.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "highload.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "highload.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/* A duration of the app's syntax ("30s", "2m", "500ms") in whole seconds,
rounded up; empty when it cannot be read. */}}
{{- define "highload.seconds" -}}
{{- $d := toString . }}
{{- if regexMatch "^[0-9]+s$" $d }}{{ trimSuffix "s" $d }}
{{- else if regexMatch "^[0-9]+m$" $d }}{{ mul (trimSuffix "m" $d | atoi) 60 }}
{{- else if regexMatch "^[0-9]+ms$" $d }}{{ div (add (trimSuffix "ms" $d | atoi) 999) 1000 }}
{{- end }}
{{- end }}
