{{/* Names and labels. */}}

{{- define "cardinal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cardinal.fullname" -}}
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

{{- define "cardinal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cardinal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cardinal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cardinal.labels" -}}
helm.sh/chart: {{ include "cardinal.chart" . }}
{{ include "cardinal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: cardinal
{{- end }}

{{- define "cardinal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cardinal.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cardinal.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the chart mounts things inside the Cardinal container. */}}
{{- define "cardinal.configDir" -}}/etc/cardinal{{- end }}
{{- define "cardinal.stateDir" -}}/var/lib/cardinal{{- end }}
{{- define "cardinal.containerPort" -}}9091{{- end }}

{{/*
cardinal.clustered: "true" when the standalone replicas form a cluster.
*/}}
{{- define "cardinal.clustered" -}}
{{- if and (eq .Values.mode "standalone") .Values.cluster.enabled }}true{{ end }}
{{- end }}

{{/*
cardinal.multiReplica: "true" when the standalone Deployment may run more
than one pod (replicaCount, or the HPA's maxReplicas).
*/}}
{{- define "cardinal.multiReplica" -}}
{{- if eq .Values.mode "standalone" }}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.maxReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}
{{- end }}

{{/*
cardinal.peersService is the headless Service the cluster's replicas find
each other through.
*/}}
{{- define "cardinal.peersService" -}}
{{- printf "%s-peers" (include "cardinal.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
cardinal.validate fails on values that render but cannot work.
*/}}
{{- define "cardinal.validate" -}}
{{- if and .Values.cluster.enabled (ne .Values.mode "standalone") }}
{{- fail "cluster.enabled is for mode: standalone. To peer sidecars, give each Cardinal container --cluster.peers and --cluster.self through extraArgs (chart README, \"Sharded Prometheus\")." }}
{{- end }}
{{- if and .Values.persistence.enabled (include "cardinal.stateEnabled" .) (include "cardinal.multiReplica" .) }}
{{- fail "persistence.enabled needs a single replica: its volume (ReadWriteOnce, and one state file) cannot be shared by several pods. Set replicaCount: 1 without autoscaling, or turn persistence off: each replica then keeps its state in its own emptyDir." }}
{{- end }}
{{- end }}

{{- define "cardinal.secretName" -}}
{{- default (printf "%s-admin" (include "cardinal.fullname" .)) .Values.admin.existingSecret }}
{{- end }}

{{- define "cardinal.stateEnabled" -}}
{{- if and .Values.admin.enabled .Values.admin.stateFile.enabled }}true{{ end }}
{{- end }}

{{/*
cardinal.config renders cardinal.yml: .Values.config with the admin section
pointing at the chart's mounts, and, with the state volume, merge.state_file
on it (unless the values set one): without it a restart could send the
downstream samples older than merged ones it already has. In sidecar mode,
external_labels gets sidecar.shardLabel: ${POD_NAME} (expanded by Cardinal
when it loads the file) unless config.external_labels sets that label.
*/}}
{{- define "cardinal.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.admin.enabled }}
{{- $admin := dict "bearer_token_file" (printf "%s/admin-token" (include "cardinal.configDir" .)) }}
{{- if include "cardinal.stateEnabled" . }}
{{- $_ := set $admin "state_file" (printf "%s/limits.json" (include "cardinal.stateDir" .)) }}
{{- $merge := default (dict) (get $cfg "merge") }}
{{- if not (hasKey $merge "state_file") }}
{{- $_ := set $merge "state_file" (printf "%s/merge.state" (include "cardinal.stateDir" .)) }}
{{- end }}
{{- $_ := set $cfg "merge" $merge }}
{{- end }}
{{- $_ := set $cfg "admin" $admin }}
{{- end }}
{{- if and (eq .Values.mode "sidecar") .Values.sidecar.shardLabel }}
{{- $ext := default (dict) (get $cfg "external_labels") }}
{{- if not (hasKey $ext .Values.sidecar.shardLabel) }}
{{- $_ := set $ext .Values.sidecar.shardLabel "${POD_NAME}" }}
{{- end }}
{{- $_ := set $cfg "external_labels" $ext }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
cardinal.container is the Cardinal container, the same in the standalone
Deployment, next to Prometheus, and in the snippet NOTES.txt prints.
Call with (dict "root" $ "sidecar" true|false).
*/}}
{{- define "cardinal.container" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $port := include "cardinal.containerPort" $root }}
{{- $cluster := and (not .sidecar) (include "cardinal.clustered" $root) -}}
- name: cardinal
  image: {{ include "cardinal.image" $root }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args:
    - serve
    - --config.file={{ include "cardinal.configDir" $root }}/cardinal.yml
    - --web.listen-address=:{{ $port }}
    - --log.level={{ $v.logLevel }}
    {{- if $cluster }}
    # Cluster mode: the members are the addresses of the headless Service;
    # this replica is the one at its pod IP.
    - --cluster.peers=dns+{{ include "cardinal.peersService" $root }}.{{ $root.Release.Namespace }}.svc.{{ $v.clusterDomain }}:{{ $port }}
    - --cluster.self=$(POD_IP):{{ $port }}
    - --cluster.refresh-interval={{ $v.cluster.refreshInterval }}
    - --cluster.probe-interval={{ $v.cluster.probeInterval }}
    - --cluster.peer-timeout={{ $v.cluster.peerTimeout }}
    - --cluster.handover-delay={{ $v.cluster.handoverDelay }}
    {{- end }}
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  ports:
    - name: {{ if .sidecar }}cardinal{{ else }}http{{ end }}
      containerPort: {{ $port }}
      protocol: TCP
  env:
    # Cardinal budgets for the container's memory limit: the Go runtime
    # gets 80 % of it (GOMEMLIMIT), requests are shed with 503 before the
    # rest is reached (see the README's Limits and protection).
    - name: CARDINAL_MEMORY_LIMIT
      valueFrom:
        resourceFieldRef:
          containerName: cardinal
          resource: limits.memory
    {{- if $cluster }}
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    {{- end }}
    {{- if and .sidecar $v.sidecar.shardLabel }}
    # The value of the shard label in cardinal.yml's external_labels
    # ({{ $v.sidecar.shardLabel }}): keeps the outputs of Prometheus shards apart.
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- $port := ternary "cardinal" "http" .sidecar }}
  {{- with $v.livenessProbe }}
  livenessProbe:
    {{- $probe := deepCopy . }}
    {{- if $probe.httpGet }}{{ $_ := set $probe.httpGet "port" $port }}{{ end }}
    {{- toYaml $probe | nindent 4 }}
  {{- end }}
  {{- with (ternary $v.sidecar.readinessProbe $v.readinessProbe .sidecar) }}
  readinessProbe:
    {{- $probe := deepCopy . }}
    {{- if $probe.httpGet }}{{ $_ := set $probe.httpGet "port" $port }}{{ end }}
    {{- toYaml $probe | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml (ternary $v.sidecar.resources $v.resources .sidecar) | nindent 4 }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: cardinal-config
      mountPath: {{ include "cardinal.configDir" $root }}
      readOnly: true
    {{- if include "cardinal.stateEnabled" $root }}
    - name: cardinal-state
      mountPath: {{ include "cardinal.stateDir" $root }}
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
cardinal.volumes are the volumes cardinal.container mounts. The config and the
admin token are projected into one directory, so cardinal.yml and admin-token
sit side by side as DESIGN.md shows.
Call with (dict "root" $ "sidecar" true|false).
*/}}
{{- define "cardinal.volumes" -}}
{{- $root := .root }}
{{- $v := $root.Values -}}
- name: cardinal-config
  projected:
    sources:
      - configMap:
          name: {{ include "cardinal.fullname" $root }}
          items:
            - key: cardinal.yml
              path: cardinal.yml
      {{- if $v.admin.enabled }}
      - secret:
          name: {{ include "cardinal.secretName" $root }}
          items:
            - key: {{ $v.admin.secretKey }}
              path: admin-token
      {{- end }}
{{- if include "cardinal.stateEnabled" $root }}
- name: cardinal-state
  {{- if and $v.persistence.enabled (not .sidecar) }}
  persistentVolumeClaim:
    claimName: {{ default (include "cardinal.fullname" $root) $v.persistence.existingClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: 64Mi
  {{- end }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}
