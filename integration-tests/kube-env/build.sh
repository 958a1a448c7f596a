#!/usr/bin/env bash
# Builds kube-env (kube-apiserver + embedded etcd) into integration-tests/.cache/bin/.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

# Must match the k8s.io/kubernetes version in kube-env/go.mod.
KUBE_VERSION=v1.37.2
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
it_go_build kube-env "$IT_DIR/kube-env" . "-s -w \
 -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean"
