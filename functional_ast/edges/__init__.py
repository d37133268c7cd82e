"""The edges: checkpoints, MLflow tracking, console and progress callbacks, energy meters, run folders and resume
(`runs`), the tracked fit and comparison (`tracked`)."""
