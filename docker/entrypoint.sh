#!/usr/bin/env bash
# The image's entrypoint: one Ray head (+ MLflow server), or one Ray worker, or any command.
#
#   head    MLflow server on $MLFLOW_PORT (5000) and the Ray head: GCS on $RAY_PORT (6379), dashboard and
#           job server on $DASHBOARD_PORT (8265)
#   worker  a Ray node joining $RAY_HEAD_ADDRESS (head:6379), one per GPU host
#   *       run as a command (e.g. python -m bohb_search search ...)
#
# Ray 2.60 clusters authenticate with a token (RAY_AUTH_MODE=token). Every node, and every
# `ray job submit` from the host, must hold the SAME token: give it as $RAY_AUTH_TOKEN (compose passes
# the host's). A head started without one generates a token, prints where it is, and uses it; workers
# never generate one (their own token would lock them out of the cluster).
#
# Optional: NUM_CPUS, NUM_GPUS, RAY_RESOURCES (JSON), RAY_NODE_IP (address the node advertises),
# RAY_TEMP_DIR, LISTEN_HOST (interface of the dashboard and MLflow: 0.0.0.0), MLFLOW_STORE (folder of
# the MLflow database and artifacts: /results), MLFLOW_ALLOWED_HOSTS.
set -euo pipefail
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
RAY_PORT="${RAY_PORT:-6379}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8265}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_STORE="${MLFLOW_STORE:-/results}"
LISTEN_HOST="${LISTEN_HOST:-0.0.0.0}"
# MLflow 3.17 answers 403 to a Host header it was not told to allow (DNS-rebinding protection): allow
# the compose service name the workers use, and the host's own names for the browser
MLFLOW_ALLOWED_HOSTS="${MLFLOW_ALLOWED_HOSTS:-head,head:${MLFLOW_PORT},localhost,localhost:${MLFLOW_PORT},127.0.0.1,127.0.0.1:${MLFLOW_PORT}}"

node_args=()
[ -n "${RAY_NODE_IP:-}" ] && node_args+=(--node-ip-address "$RAY_NODE_IP")
[ -n "${NUM_CPUS:-}" ] && node_args+=(--num-cpus "$NUM_CPUS")
[ -n "${NUM_GPUS:-}" ] && node_args+=(--num-gpus "$NUM_GPUS")
[ -n "${RAY_RESOURCES:-}" ] && node_args+=(--resources "$RAY_RESOURCES")
[ -n "${RAY_TEMP_DIR:-}" ] && node_args+=(--temp-dir "$RAY_TEMP_DIR")

have_token() {
    [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}" ]
}

case "${1:-worker}" in
    head)
        if [ "$RAY_AUTH_MODE" = token ] && ! have_token; then
            RAY_AUTH_TOKEN="$(ray get-auth-token --generate 2>/dev/null)"
            export RAY_AUTH_TOKEN
            echo "entrypoint: no RAY_AUTH_TOKEN given; generated one in $HOME/.ray/auth_token. Workers and" \
                 "'ray job submit' need the same token in RAY_AUTH_TOKEN." >&2
        fi
        mkdir -p "$MLFLOW_STORE"
        mlflow server --host "$LISTEN_HOST" --port "$MLFLOW_PORT" --workers 2 \
            --backend-store-uri "sqlite:///$MLFLOW_STORE/mlflow.db" \
            --artifacts-destination "$MLFLOW_STORE/mlartifacts" \
            --allowed-hosts "$MLFLOW_ALLOWED_HOSTS" &
        exec ray start --head --port="$RAY_PORT" --dashboard-host="$LISTEN_HOST" --dashboard-port="$DASHBOARD_PORT" \
            "${node_args[@]}" --block ;;
    worker)
        if [ "$RAY_AUTH_MODE" = token ] && ! have_token; then
            echo "entrypoint: worker: RAY_AUTH_TOKEN is not set; give every node the head's token" \
                 "(README: Ray cluster)" >&2
            exit 2
        fi
        exec ray start --address="${RAY_HEAD_ADDRESS:-head:6379}" "${node_args[@]}" --block ;;
    *)
        exec "$@" ;;
esac
