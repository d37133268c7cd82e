"""The edges: checkpoints, MLflow tracking, console and progress callbacks, energy meters."""
