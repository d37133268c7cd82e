"""The command line: flags -> config, run folders and resume, the MLflow parent run, the summary."""
