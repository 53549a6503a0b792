"""The model's own API: versions pickled under the old module path still load; ONNX failures are named."""

from __future__ import annotations

import pickle

import pytest

from pipelines.model.classifier import ChurnClassifier, OnnxRuntimeError
from pipelines.model.runtime import ModelLoadError, ServedModel
from tests.unit.serving.scoring import SCHEMA


def test_a_version_pickled_as_pipelines_model_churn_classifier_still_loads():
    # What MLflow's cloudpickle wrote for versions registered before the layout by folders.
    assert pickle.loads(b"cpipelines.model\nChurnClassifier\n.") is ChurnClassifier
    with pytest.raises(AttributeError, match="'Nothing'"):
        pickle.loads(b"cpipelines.model\nNothing\n.")


def test_a_graph_onnx_runtime_cannot_load_is_a_named_error_and_a_refused_runtime():
    model = ChurnClassifier()
    model.onnx_models = {"onnx": b"not an onnx graph"}
    with pytest.raises(OnnxRuntimeError, match="ONNX Runtime cannot load the graph: InvalidProtobuf"):
        model.use_runtime("onnx")
    assert model.runtime == "native"  # nothing switched

    class Wrapped:
        def unwrap_python_model(self):
            return model

    model.config = {"family": "torch"}
    served = ServedModel(name="m", version=1, sha256="0" * 64, run_id=None, schema=SCHEMA, pyfunc=Wrapped())
    with pytest.raises(ModelLoadError, match="CT_SERVE_RUNTIME=onnx: ONNX Runtime cannot load") as refused:
        served.use_runtime("onnx", 1)
    assert refused.value.reason == "runtime"
    with pytest.raises(ModelLoadError, match="no onnx-int8 runtime"):
        served.use_runtime("onnx-int8", 1)
