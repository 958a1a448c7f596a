{{/* The chart name, or nameOverride. */}}
{{- define "iter8.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of every object name: release-chart, shortened when the release is the chart. */}}
{{- define "iter8.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "iter8.controller.fullname" -}}{{ include "iter8.fullname" . }}-controller{{- end -}}
{{- define "iter8.analytics.fullname" -}}{{ include "iter8.fullname" . }}-analytics{{- end -}}

{{/* Labels of every object. */}}
{{- define "iter8.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "iter8.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: iter8
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of a component: include with (dict "ctx" $ "component" "controller"). */}}
{{- define "iter8.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iter8.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "iter8.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (include "iter8.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "iter8.analytics.serviceAccountName" -}}
{{- if .Values.analytics.serviceAccount.create -}}
{{- default (include "iter8.analytics.fullname" .) .Values.analytics.serviceAccount.name -}}
{{- else -}}
{{- required "analytics.serviceAccount.name is required when analytics.serviceAccount.create is false" .Values.analytics.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Lease the controller replicas elect a leader with. */}}
{{- define "iter8.leaseName" -}}{{ include "iter8.controller.fullname" . }}{{- end -}}

{{/* The analytics URL the controller uses by default. */}}
{{- define "iter8.analyticsURL" -}}
{{- if .Values.defaults.analyticsURL -}}
{{- .Values.defaults.analyticsURL -}}
{{- else if .Values.analytics.enabled -}}
{{- $scheme := ternary "https" "http" (ne .Values.analytics.tls.secretName "") -}}
{{- printf "%s://%s.%s.svc:%d" $scheme (include "iter8.analytics.fullname" .) .Release.Namespace (int .Values.analytics.port) -}}
{{- else -}}
{{- fail "defaults.analyticsURL is required when analytics.enabled is false" -}}
{{- end -}}
{{- end -}}

{{- define "iter8.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The Secret whose ca.crt the controller trusts for the analytics service, if any. */}}
{{- define "iter8.analyticsCASecret" -}}
{{- if .Values.controller.analyticsTLS.caSecret -}}
{{- .Values.controller.analyticsTLS.caSecret -}}
{{- else if and .Values.analytics.enabled .Values.analytics.tls.secretName -}}
{{- .Values.analytics.tls.secretName -}}
{{- end -}}
{{- end -}}
