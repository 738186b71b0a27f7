#!/usr/bin/env bash
# `make cluster`: a local kind cluster with Knative Serving (KServe Serverless mode, needed for canary
# traffic splitting), KServe, Kubeflow Pipelines, Katib, kube-prometheus-stack, the Kubeflow Spark Operator
# and smart-energy: its ServingRuntime smart-energy-xgboost and both InferenceServices (energy-forecaster,
# energy-forecaster-dayahead) come with the overlay / the chart.
# Needs Docker, kind, kubectl and helm on PATH. Not run by the test suite (no Docker there).
set -euo pipefail

CLUSTER=${CLUSTER:-smart-energy}
KNATIVE_VERSION=${KNATIVE_VERSION:-knative-v1.16.0}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:-v1.16.1}
# the release of the kserve Python pin (requirements.lock) and of the CRDs tests/k8s/crds/ validates against
KSERVE_VERSION=${KSERVE_VERSION:-v0.20.0}
KFP_VERSION=${KFP_VERSION:-2.3.0}
KATIB_VERSION=${KATIB_VERSION:-v0.17.0}
# the release whose SparkApplication CRD tests/k8s/crds/ vendors (and validates our objects against)
SPARK_OPERATOR_VERSION=${SPARK_OPERATOR_VERSION:-2.5.2}
INSTALL_WITH=${INSTALL_WITH:-kustomize}   # kustomize | helm
ISVC_READY_TIMEOUT=${ISVC_READY_TIMEOUT:-600s}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

need() { command -v "$1" >/dev/null 2>&1 || { echo "cluster.sh: $1 is required on PATH" >&2; exit 2; }; }
for tool in docker kind kubectl helm; do need "$tool"; done

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

echo "== cert-manager (KServe webhooks)"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout=300s

echo "== Knative Serving + Kourier (KServe Serverless mode)"
kubectl apply -f "https://github.com/knative/serving/releases/download/${KNATIVE_VERSION}/serving-crds.yaml"
kubectl apply -f "https://github.com/knative/serving/releases/download/${KNATIVE_VERSION}/serving-core.yaml"
kubectl apply -f "https://github.com/knative/net-kourier/releases/download/${KNATIVE_VERSION}/kourier.yaml"
kubectl patch configmap/config-network -n knative-serving --type merge \
  -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'
# emptyDir volumes for the read-only-root-filesystem pods
kubectl patch configmap/config-features -n knative-serving --type merge \
  -p '{"data":{"kubernetes.podspec-emptydir":"enabled","kubernetes.podspec-securitycontext":"enabled"}}'
kubectl -n knative-serving rollout status deploy/controller --timeout=300s

echo "== KServe ${KSERVE_VERSION} (default deployment mode: Serverless)"
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/${KSERVE_VERSION}/kserve.yaml"
kubectl -n kserve rollout status deploy/kserve-controller-manager --timeout=300s
kubectl apply --server-side -f "https://github.com/kserve/kserve/releases/download/${KSERVE_VERSION}/kserve-cluster-resources.yaml"

echo "== Kubeflow Pipelines ${KFP_VERSION} (standalone) and Katib ${KATIB_VERSION}"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=${KFP_VERSION}"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=${KFP_VERSION}"
kubectl apply --server-side -k "github.com/kubeflow/katib.git/manifests/v1beta1/installs/katib-standalone?ref=${KATIB_VERSION}"

echo "== kube-prometheus-stack (Prometheus Operator: PodMonitor, ServiceMonitor, PrometheusRule)"
helm repo add prometheus-community https://prometheus-community.github.io/helm-charts >/dev/null
helm upgrade --install kube-prometheus-stack prometheus-community/kube-prometheus-stack \
  --namespace monitoring --create-namespace --wait --timeout 10m

echo "== Kubeflow Spark Operator ${SPARK_OPERATOR_VERSION} (SparkApplication; its webhook applies our pods' env,"
echo "   volumes and security contexts); smart-energy brings the Spark ServiceAccounts and RBAC itself"
helm repo add spark-operator https://kubeflow.github.io/spark-operator >/dev/null
helm upgrade --install spark-operator spark-operator/spark-operator --version "$SPARK_OPERATOR_VERSION" \
  --namespace spark-operator --create-namespace --set "spark.jobNamespaces={smart-energy}" \
  --set webhook.enable=true --set spark.serviceAccount.create=false --set spark.rbac.create=false \
  --wait --timeout 10m

echo "== smart-energy images (:dev) into kind"
docker build -f "$ROOT/components/Dockerfile" -t ghcr.io/smart-energy/components:dev "$ROOT"
# one image for the predictor (the ServingRuntime's container) and the transformers
docker build -f "$ROOT/serving/Dockerfile" -t ghcr.io/smart-energy/serving:dev "$ROOT"
docker build -f "$ROOT/components/Dockerfile.spark" -t ghcr.io/smart-energy/spark:dev "$ROOT"
kind load docker-image --name "$CLUSTER" \
  ghcr.io/smart-energy/components:dev ghcr.io/smart-energy/serving:dev ghcr.io/smart-energy/spark:dev

echo "== smart-energy (${INSTALL_WITH})"
if [ "$INSTALL_WITH" = helm ]; then
  helm upgrade --install smart-energy "$ROOT/helm/smart-energy" -f "$ROOT/helm/smart-energy/values-kind.yaml"
else
  kubectl apply -k "$ROOT/manifests/overlays/kind"
fi
kubectl -n smart-energy rollout status statefulset/minio --timeout=300s
kubectl -n smart-energy rollout status deploy/redis --timeout=300s
kubectl -n smart-energy get servingruntime/smart-energy-xgboost >/dev/null

echo "== InferenceServices energy-forecaster and energy-forecaster-dayahead"
# An InferenceService is Ready once it serves a registry version: `smart-energy rollout` replaces the placeholder
# storageUri .../production with the version folder (and re-applying keeps the live value). On a new cluster that
# comes after README.md, Kubernetes, 'Install on kind', step 6 (first model); run `make cluster` again then.
waiting=()
for isvc in energy-forecaster energy-forecaster-dayahead; do
  uri=$(kubectl -n smart-energy get "isvc/$isvc" -o jsonpath='{.spec.predictor.model.storageUri}')
  if [ "${uri%/production}" != "$uri" ]; then
    echo "$isvc: no model rolled out yet ($uri); not waiting for it (README.md, Kubernetes, step 6)"
  else
    waiting+=("isvc/$isvc")
  fi
done
if [ "${#waiting[@]}" -gt 0 ] && ! kubectl -n smart-energy wait --for=condition=Ready \
    --timeout="$ISVC_READY_TIMEOUT" "${waiting[@]}"; then
  kubectl -n smart-energy get isvc >&2 || true
  echo "cluster.sh: ${waiting[*]} not Ready after $ISVC_READY_TIMEOUT" >&2
  exit 1
fi
echo "done: ${#waiting[@]} of 2 InferenceServices Ready."
