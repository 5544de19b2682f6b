"""SignMAE core library: configs, artifact store, data, model and training.

This package never imports Prefect or Ray: `pipelines/` applies it to datasets with Ray and
`flows/` wraps the stages in Prefect.
"""

__version__ = "0.1.0"
