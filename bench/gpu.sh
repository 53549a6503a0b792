#!/usr/bin/env bash
# The training stage's checks on a GPU host, as one script under a time limit (a lent machine's minutes are
# few): each step runs under its own timeout and writes $OUT/<step>.txt as it goes, and bench/train.py prints
# each run as it ends, so a step cut off keeps what it measured. About 8 minutes on one H200 and 16 cores.
#
#   OUT=/tmp/gpu bash bench/gpu.sh        # from the repository's root, on the GPU host
#
# Steps: the host; a training step of MLPs of several sizes on one CPU thread and on the GPU (--crossover:
# where CT_TRAIN_DEVICE=auto starts to pick the GPU); the wide MLP and the demo MLP on the GPU against plain
# torch; ranks alone (one thread each) on the host's cores for the wide MLP.
#
# The host needs the project's Python packages beside a CUDA build of torch. An offline host whose image holds
# torch, numpy, pyarrow, psutil and fsspec but not the rest takes them as wheels in .whl/ (ignored by git),
# downloaded on a machine that reaches PyPI (for the host's Python, here 3.12), then installed by this script:
#
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pandas==2.3.3 pytz tzdata pydantic pydantic_core pydantic-settings pydantic-extra-types annotated-types \
#     typing-inspection python-dotenv mlflow-skinny mlflow-tracing fastapi starlette python-multipart \
#     cachetools databricks-sdk google-auth googleapis-common-protos dill email-validator importlib_metadata \
#     opentelemetry-api opentelemetry-sdk opentelemetry-proto opentelemetry-semantic-conventions orjson ujson \
#     sqlparse zstandard
#
# (the versions of this project's lock, each as its .venv has it: `pip freeze`; pandas below 3).
set -u
OUT=${OUT:-bench/out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ct-site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/ct-site
fi
export PYTHONUNBUFFERED=1

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most $limit s)"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
}

{
    nvidia-smi -L
    "$PYTHON" -c "import torch, pandas, pyarrow; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'pandas', pandas.__version__, 'pyarrow', pyarrow.__version__)"
    lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core"
} 2>&1 | tee "$OUT/host.txt"
step crossover 100 "$PYTHON" bench/train.py --skip-fit --skip-stage --crossover --device cuda
step gpu-wide 120 "$PYTHON" bench/train.py --device cuda --models wide --rows 1000000 --ranks --epochs 3 --skip-stage
step gpu-demo 90 "$PYTHON" bench/train.py --device cuda --models demo --rows 1000000 --ranks --epochs 2 --skip-stage
step cpu-ranks 150 "$PYTHON" bench/train.py --models wide --rows 100000 --ranks 2 4 8 --rank-threads 1 --epochs 2 \
    --skip-stage
