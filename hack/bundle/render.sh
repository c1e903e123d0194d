#!/usr/bin/env bash
# render.sh DIR IMAGE: `kustomize build DIR` with the operator image set to
# IMAGE, through a throw-away overlay so the tree is never edited (make
# deploy, undeploy, build-installer and bundle all render through here).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KUSTOMIZE=${KUSTOMIZE:-${ROOT}/bin/kustomize}
dir=${1:?usage: render.sh DIR IMAGE}
image=${2:?usage: render.sh DIR IMAGE}

# The image the manifests name (config/manager/kustomization.yaml).
OPERATOR_IMAGE=ghcr.io/ambientmesh/ambient-operator

overlay=$(mktemp -d "${ROOT}/.render.XXXXXX")
trap 'rm -rf "${overlay}"' EXIT
cat > "${overlay}/kustomization.yaml" <<YAML
resources:
- ../${dir}
YAML
(cd "${overlay}" && "${KUSTOMIZE}" edit set image "${OPERATOR_IMAGE}=${image}")
"${KUSTOMIZE}" build "${overlay}"
