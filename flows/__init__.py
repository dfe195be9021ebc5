"""Prefect flows, tasks, deployments (prefect.yaml) and the local stack that wire the pipeline to the store."""
