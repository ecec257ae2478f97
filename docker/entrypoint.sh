#!/usr/bin/env bash
# head:   Ray head node (GCS on 6379, dashboard/job server on 8265) + MLflow server on 5000
# worker: Ray worker joining $RAY_HEAD_ADDRESS (default head:6379), one per GPU host
# anything else is run as a command (e.g. python -m bohb_search search ...)
set -euo pipefail
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"  # Ray 2.60: jobs and clients authenticate with a token
case "${1:-worker}" in
    head)
        mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri "sqlite:////results/mlflow.db" \
            --default-artifact-root /results/mlartifacts &
        exec ray start --head --port=6379 --dashboard-host=0.0.0.0 --num-gpus="${NUM_GPUS:-0}" --block ;;
    worker)
        exec ray start --address="${RAY_HEAD_ADDRESS:-head:6379}" --block ;;
    *)
        exec "$@" ;;
esac
