"""The model's own API: versions pickled under the old module path still load; ONNX failures are named."""

from __future__ import annotations

import pickle

import pytest

from pipelines.host import usable_cores
from pipelines.model.classifier import ChurnClassifier, OnnxRuntimeError, onnx_session
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


@pytest.mark.skipif(usable_cores() < 2, reason="on one core, 0 and 1 thread are one thread")
def test_serve_threads_0_gives_onnx_runtime_a_thread_per_usable_core():
    from onnx import TensorProto, helper

    value = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1]) for name in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", value[:1], value[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert (
        onnx_session(model.SerializeToString(), 0).get_session_options().intra_op_num_threads
        == usable_cores()
    )
    assert onnx_session(model.SerializeToString(), 1).get_session_options().intra_op_num_threads == 1


def test_a_bug_in_this_projects_scoring_code_at_warm_up_is_not_taken_for_a_bad_model():
    """The project's own model runs this project's code: a TypeError there refused the version for 5 minutes
    as a bad model (reason warmup, no trace); it is a bug, for the holder to count, log and try again. What the
    model's input or weights cause (a ValueError) still refuses it."""
    model = ChurnClassifier()
    model.config = {"family": "sklearn"}

    class Wrapped:
        def unwrap_python_model(self):
            return model

    def failing(error):
        def predict_proba_columns(columns):
            raise error

        return predict_proba_columns

    served = ServedModel(name="m", version=1, sha256="0" * 64, run_id=None, schema=SCHEMA, pyfunc=Wrapped())
    model.predict_proba_columns = failing(TypeError("a bug in the project's own code"))
    with pytest.raises(TypeError, match="a bug in the project's own code"):
        served.warm_up(8)
    model.predict_proba_columns = failing(ValueError("X has 3 features, but the model expects 4"))
    with pytest.raises(ModelLoadError, match="warm-up batch failed: ValueError") as refused:
        served.warm_up(8)
    assert refused.value.reason == "warmup"
