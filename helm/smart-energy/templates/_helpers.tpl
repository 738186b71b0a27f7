{{- /* The names of the served models, which are their InferenceServices' names: a sorted JSON list. */}}
{{- define "smart-energy.isvcNames" -}}
{{- $names := list }}
{{- range .Values.models }}{{ $names = append $names .name }}{{ end }}
{{- sortAlpha $names | toJson }}
{{- end }}

{{- /* A label selector for the pods of every InferenceService of ours (KServe labels them with its name). */}}
{{- define "smart-energy.isvcPods" -}}
matchExpressions:
  - key: serving.kserve.io/inferenceservice
    operator: In
    values: {{ include "smart-energy.isvcNames" . }}
{{- end }}
