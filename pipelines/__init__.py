"""The pipeline stages: `signmae_core` applied to datasets, parallel with Ray."""
