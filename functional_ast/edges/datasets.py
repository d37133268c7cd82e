"""A data set as MLflow records it: a short stable fingerprint, and the run input `log_inputs` takes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from functional_ast.data.stats import dataset_digest  # noqa: F401  (re-exported: where it lived before)


def dataset_input(name: str, source: str, digest: str, context: str | None, profile: dict):
    """The `mlflow.entities.DatasetInput` that `mlflow.log_input(MetaDataset(...), context)` would log."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    local = Path(source)
    location = str(local.resolve()) if "://" not in source and local.exists() else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
            found = resolve_dataset_source(location)
    except Exception:  # not a path or URL MLflow knows (e.g. "torchvision:CIFAR10")
        found = CodeDatasetSource({"source": source})
    d = MetaDataset(found, name=name, digest=digest).to_dict()
    entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                     profile=json.dumps(profile) if profile else None)
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)] if context else [])
