#!/usr/bin/env bash
# Validates deploy/ offline (no cluster, no kubectl needed): renders deploy/kubernetes as
# `kubectl apply -k` would, checks every object against the Kubernetes schemas (kubernetes-validate,
# strict) and the example ScaledObject against KEDA's vendored CRD schema, checks that ports and paths
# agree, and shows that broken copies are rejected. See deploy/validate.py.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
if ! "$venv/bin/python" -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r deploy/requirements.txt
fi
"$venv/bin/python" deploy/validate.py
