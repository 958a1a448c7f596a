#!/usr/bin/env bash
# Builds the official helm CLI (helm.sh/helm/v3/cmd/helm) into integration-tests/.cache/bin/.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/lib.sh"

# Must match helm.sh/helm/v3 in tools/helm/go.mod; the Kubernetes version is
# what `helm template`/`helm lint` assume without a cluster (the
# kube-apiserver version of kube-env).
HELM_VERSION=v3.22.0
KUBE_MINOR=37
it_go_build helm "$IT_DIR/tools/helm" helm.sh/helm/v3/cmd/helm "-s -w \
 -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$KUBE_MINOR \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$KUBE_MINOR"
