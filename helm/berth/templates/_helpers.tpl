{{/* Names and labels. */}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berth.fullname" -}}
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

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "berth.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "berth.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berth.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The chart's own Secret: generated and user-given credentials. */}}
{{- define "berth.secretName" -}}
{{- include "berth.fullname" . }}
{{- end }}

{{/* Replicas there can be at once (the HPA's maximum when autoscaling). */}}
{{- define "berth.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/* The blob-descriptor cache after resolving `auto`; empty for none. */}}
{{- define "berth.cache" -}}
{{- $c := .Values.cache.blobdescriptor }}
{{- if eq $c "auto" }}{{ if .Values.redis.addr }}redis{{ else }}inmemory{{ end }}
{{- else if ne $c "none" }}{{ $c }}
{{- end }}
{{- end }}

{{/* Whether an htpasswd file is mounted at /etc/berth/auth/htpasswd. */}}
{{- define "berth.hasUsers" -}}
{{- if and (ne .Values.auth.type "none") (or .Values.auth.existingSecret .Values.auth.users) }}true{{ end }}
{{- end }}

{{/* Azure with a shared key (accountkey from a Secret) rather than credentials.type. */}}
{{- define "berth.azureSharedKey" -}}
{{- $az := .Values.storage.azure }}
{{- if and (ne $az.credentials.type "client_secret") (or $az.existingSecret $az.accountKey) }}true{{ end }}
{{- end }}

{{/* A variable from a key of the user's Secret, or else of the chart's. */}}
{{- define "berth.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ default .chartSecret .existing }}
      key: {{ .key }}
{{- end }}

{{/* Credentials as REGISTRY_* variables, so none is written into the ConfigMap. */}}
{{- define "berth.credentialEnv" -}}
{{- $s := include "berth.secretName" . }}
{{- include "berth.secretEnv" (dict "env" "REGISTRY_HTTP_SECRET" "existing" .Values.httpSecret.existingSecret "chartSecret" $s "key" (ternary .Values.httpSecret.existingSecretKey "http-secret" (not (empty .Values.httpSecret.existingSecret)))) }}
{{- $s3 := .Values.storage.s3 }}
{{- if and (eq .Values.storage.type "s3") (or $s3.existingSecret $s3.accessKey) }}
{{ include "berth.secretEnv" (dict "env" "REGISTRY_STORAGE_S3_ACCESSKEY" "existing" $s3.existingSecret "chartSecret" $s "key" "accesskey") }}
{{ include "berth.secretEnv" (dict "env" "REGISTRY_STORAGE_S3_SECRETKEY" "existing" $s3.existingSecret "chartSecret" $s "key" "secretkey") }}
{{- end }}
{{- $az := .Values.storage.azure }}
{{- if eq .Values.storage.type "azure" }}
{{- if include "berth.azureSharedKey" . }}
{{ include "berth.secretEnv" (dict "env" "REGISTRY_STORAGE_AZURE_ACCOUNTKEY" "existing" $az.existingSecret "chartSecret" $s "key" "accountkey") }}
{{- else if eq $az.credentials.type "client_secret" }}
{{ include "berth.secretEnv" (dict "env" "REGISTRY_STORAGE_AZURE_CREDENTIALS_SECRET" "existing" $az.existingSecret "chartSecret" $s "key" "clientsecret") }}
{{- end }}
{{- end }}
{{- if and .Values.redis.addr (or .Values.redis.existingSecret .Values.redis.password) }}
{{ include "berth.secretEnv" (dict "env" "REGISTRY_REDIS_PASSWORD" "existing" .Values.redis.existingSecret "chartSecret" $s "key" (ternary .Values.redis.existingSecretKey "redis-password" (not (empty .Values.redis.existingSecret)))) }}
{{- end }}
{{- end }}

{{- define "berth.tokenService" -}}
{{- if .Values.auth.token.service }}{{ .Values.auth.token.service }}
{{- else if .Values.ingress.enabled }}{{ .Values.ingress.host }}
{{- else }}{{ include "berth.fullname" . }}
{{- end }}
{{- end }}

{{/*
Refuse combinations that would deploy but not work; each message says what to change.
*/}}
{{- define "berth.validate" -}}
{{- $max := int (include "berth.maxReplicas" .) }}
{{- $st := .Values.storage.type }}
{{- if and (eq $st "filesystem") (gt $max 1) (not (has "ReadWriteMany" .Values.storage.filesystem.persistence.accessModes)) }}
{{- fail (printf "storage.type filesystem allows one replica (its volume is ReadWriteOnce), but %d are asked for (replicaCount or autoscaling.maxReplicas): use s3 or azure, or a ReadWriteMany volume in storage.filesystem.persistence.accessModes" $max) }}
{{- end }}
{{- if and (eq $st "s3") (or (not .Values.storage.s3.region) (not .Values.storage.s3.bucket)) }}
{{- fail "storage.type s3 needs storage.s3.region and storage.s3.bucket" }}
{{- end }}
{{- if and (eq $st "s3") (ne (empty .Values.storage.s3.accessKey) (empty .Values.storage.s3.secretKey)) }}
{{- fail "storage.s3.accessKey and storage.s3.secretKey go together" }}
{{- end }}
{{- if and (eq $st "azure") (or (not .Values.storage.azure.accountname) (not .Values.storage.azure.container)) }}
{{- fail "storage.type azure needs storage.azure.accountname and storage.azure.container" }}
{{- end }}
{{- $cache := include "berth.cache" . }}
{{- if and (eq $cache "redis") (not .Values.redis.addr) }}
{{- fail "cache.blobdescriptor redis needs redis.addr" }}
{{- end }}
{{- if and (eq $cache "inmemory") (gt $max 1) .Values.storage.delete.enabled }}
{{- fail "several replicas with storage.delete.enabled need a shared cache: set redis.addr (or cache.blobdescriptor: none); an inmemory cache keeps serving blobs another replica deleted" }}
{{- end }}
{{- if and (ne .Values.auth.type "none") (not (include "berth.hasUsers" .)) (not (and (eq .Values.auth.type "token") .Values.auth.token.anonymous)) }}
{{- fail (printf "auth.type %s needs accounts: auth.users or auth.existingSecret" .Values.auth.type) }}
{{- end }}
{{- end }}

{{/* Berth's config.yml (distribution's schema); credentials come from env. */}}
{{- define "berth.config" -}}
{{- $v := .Values }}
{{- $storage := dict "delete" (dict "enabled" $v.storage.delete.enabled) "redirect" (dict "disable" $v.storage.redirect.disable) "maintenance" (deepCopy $v.storage.maintenance) }}
{{- if eq $v.storage.type "filesystem" }}
{{- $_ := set $storage "filesystem" (dict "rootdirectory" $v.storage.filesystem.rootdirectory) }}
{{- else if eq $v.storage.type "s3" }}
{{- $s3 := dict "region" $v.storage.s3.region "bucket" $v.storage.s3.bucket "forcepathstyle" $v.storage.s3.forcepathstyle "secure" $v.storage.s3.secure "encrypt" $v.storage.s3.encrypt "chunksize" $v.storage.s3.chunksize "storageclass" $v.storage.s3.storageclass }}
{{- range $k := list "regionendpoint" "redirectendpoint" "keyid" "rootdirectory" }}
{{- if index $v.storage.s3 $k }}{{ $_ := set $s3 $k (index $v.storage.s3 $k) }}{{ end }}
{{- end }}
{{- $_ := set $storage "s3" $s3 }}
{{- else if eq $v.storage.type "azure" }}
{{- $az := dict "accountname" $v.storage.azure.accountname "container" $v.storage.azure.container "realm" $v.storage.azure.realm }}
{{- range $k := list "serviceurl" "rootdirectory" }}
{{- if index $v.storage.azure $k }}{{ $_ := set $az $k (index $v.storage.azure $k) }}{{ end }}
{{- end }}
{{- if not (include "berth.azureSharedKey" .) }}
{{- $cred := dict "type" $v.storage.azure.credentials.type }}
{{- if eq $v.storage.azure.credentials.type "client_secret" }}
{{- $_ := set $cred "clientid" $v.storage.azure.credentials.clientid }}
{{- $_ := set $cred "tenantid" $v.storage.azure.credentials.tenantid }}
{{- end }}
{{- $_ := set $az "credentials" $cred }}
{{- end }}
{{- $_ := set $storage "azure" $az }}
{{- end }}
{{- $cache := include "berth.cache" . }}
{{- if $cache }}
{{- $_ := set $storage "cache" (dict "blobdescriptor" $cache) }}
{{- end }}
{{- $http := dict "addr" (printf ":%d" (int $v.service.port)) "relativeurls" false }}
{{- /* Drain within the pod's grace period: what is left after the preStop pause, less 10 s for the webhook and debug drains. */}}
{{- $drain := sub (sub (int $v.terminationGracePeriodSeconds) (int $v.preStopSleepSeconds)) 10 }}
{{- $_ := set $http "draintimeout" (printf "%ds" (max $drain 0)) }}
{{- if ne $v.auth.type "none" }}
{{- $proxies := concat ($v.auth.trustedproxies | default list) ($v.auth.token.trustedproxies | default list) | uniq }}
{{- if $proxies }}{{ $_ := set $http "trustedproxies" $proxies }}{{ end }}
{{- $_ := set $http "loginqueue" (int $v.auth.loginqueue) }}
{{- end }}
{{- if $v.externalURL }}{{ $_ := set $http "host" $v.externalURL }}{{ end }}
{{- if $v.metrics.enabled }}
{{- $_ := set $http "debug" (dict "addr" (printf ":%d" (int $v.metrics.port)) "prometheus" (dict "enabled" true "path" $v.metrics.path)) }}
{{- end }}
{{- $cfg := dict "version" "0.1" "log" (dict "level" $v.log.level "formatter" $v.log.formatter "accesslog" (dict "disabled" (not $v.log.accesslog))) "storage" $storage "http" $http }}
{{- /* Also without the redis cache: upload purging then takes a lock per round there. */}}
{{- if $v.redis.addr }}
{{- $_ := set $cfg "redis" (dict "addr" $v.redis.addr "db" $v.redis.db "dialtimeout" $v.redis.dialtimeout "readtimeout" $v.redis.readtimeout "writetimeout" $v.redis.writetimeout) }}
{{- end }}
{{- if eq $v.auth.type "htpasswd" }}
{{- $th := $v.auth.htpasswd.throttle }}
{{- $_ := set $cfg "auth" (dict "htpasswd" (dict "realm" $v.auth.htpasswd.realm "path" "/etc/berth/auth/htpasswd" "throttle" (dict "maxfailures" $th.maxfailures "window" $th.window "maxdelay" $th.maxdelay))) }}
{{- else if eq $v.auth.type "token" }}
{{- $t := $v.auth.token }}
{{- $service := include "berth.tokenService" . }}
{{- $verify := dict "service" $service "issuer" $t.issuer "rootcertbundle" "/etc/berth/token/tls.crt" }}
{{- if $t.realm }}
{{- $_ := set $verify "realm" $t.realm }}
{{- else }}
{{- $_ := set $verify "autoredirect" true }}
{{- $_ := set $verify "autoredirectpath" $t.path }}
{{- end }}
{{- $_ := set $cfg "auth" (dict "token" $verify) }}
{{- $ts := dict "path" $t.path "issuer" $t.issuer "service" $service "signingkey" "/etc/berth/token/tls.key" "certificate" "/etc/berth/token/tls.crt" "expiration" $t.expiration "refreshexpiration" $t.refreshexpiration "anonymous" $t.anonymous "acl" $t.acl }}
{{- if include "berth.hasUsers" . }}{{ $_ := set $ts "htpasswd" "/etc/berth/auth/htpasswd" }}{{ end }}
{{- if $t.labels }}{{ $_ := set $ts "labels" $t.labels }}{{ end }}
{{- $_ := set $ts "throttle" (dict "maxfailures" $t.throttle.maxfailures "window" $t.throttle.window "maxdelay" $t.throttle.maxdelay) }}
{{- $_ := set $cfg "token_server" $ts }}
{{- end }}
{{- toYaml (mustMergeOverwrite $cfg (deepCopy $v.config)) }}
{{- end }}
