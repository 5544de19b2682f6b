"""Thin Prefect flows over the pipeline stages (see docs/FLOWS.md).

`flows.pipeline` holds the flows (`signmae_pipeline` for the whole DAG, `signmae_<stage>` per
stage) and their one task, which calls `pipelines.execute.execute`; `flows.artifacts` the
progress, stage-count and report artifacts; `flows.server` a temporary Prefect server;
`flows.demo` the README's main command. Importing this package does not import Prefect.
"""
