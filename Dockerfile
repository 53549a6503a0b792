# The team deployment's images (docker-compose.yaml builds both targets):
#   ct        the pinned stack and this project: Airflow's components, the pipelines, the MLflow server,
#             Spark and Dask workers, serving. One image; the compose file gives each service its command.
#   services  PostgreSQL 15, Redis and nginx from Debian's packages, for the stack's database, Celery broker
#             and the serving replicas' reverse proxy (production swaps in managed ones).
# Both start FROM the same Debian bookworm base, an ARG: a public image for users, or a base built locally
# from Debian's packages where no registry is reachable (tests/deploy).
#
# The Python packages come from a wheelhouse, never from the network: `make wheelhouse` builds .wheelhouse/
# from requirements.txt and constraints.txt (the CPU torch wheel included), so the build is offline and
# gives the same versions as `make install`.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS os
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl procps tini \
 && rm -rf /var/lib/apt/lists/*

FROM os AS services
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 redis-server nginx \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
COPY deploy/postgres.sh deploy/redis.sh /usr/local/bin/
COPY deploy/nginx.conf /etc/nginx/ct.conf
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
# The data folder exists, owned by postgres: Docker gives a new named volume the mount point's owner (root
# otherwise, and initdb, run as postgres, could not use it).
RUN mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"

FROM os AS ct
# Java for Spark (the driver runs in the Airflow worker, executors in the Spark workers); Debian's Python 3.11
# where the base has none (a python:3.11 base brings its own).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && if ! command -v python3.11 >/dev/null; then \
      apt-get install -y --no-install-recommends python3.11 python3.11-venv; fi \
 && rm -rf /var/lib/apt/lists/*
ARG CT_UID=50000
RUN useradd --uid "${CT_UID}" --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash ct \
 && python3.11 -m venv /opt/venv \
 && mkdir -p /data /mlflow /opt/airflow/logs \
 && chown -R "${CT_UID}:0" /data /mlflow /opt/airflow /opt/venv \
 && chmod -R g+w /data /mlflow /opt/airflow
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYSPARK_PYTHON=/opt/venv/bin/python PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    SPARK_WORKER_DIR=/tmp/spark-work
USER ${CT_UID}
COPY --chown=${CT_UID}:0 requirements.txt constraints.txt /opt/ct/
RUN --mount=type=bind,source=.wheelhouse,target=/wheelhouse \
    pip install --find-links /wheelhouse -r /opt/ct/requirements.txt -c /opt/ct/constraints.txt \
 && pip install --find-links /wheelhouse --no-deps ISLP==0.6.0
COPY --chown=${CT_UID}:0 pyproject.toml /opt/ct/
COPY --chown=${CT_UID}:0 pipelines /opt/ct/pipelines
RUN --mount=type=bind,source=.wheelhouse,target=/wheelhouse \
    pip install --find-links /wheelhouse --no-deps -e /opt/ct
COPY --chown=${CT_UID}:0 dags /opt/ct/dags
COPY --chown=${CT_UID}:0 plugins /opt/ct/plugins
COPY --chown=${CT_UID}:0 include /opt/ct/include
COPY --chown=${CT_UID}:0 deploy /opt/ct/deploy
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/ct/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/ct/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    CT_STATE_DIR=/opt/airflow/state \
    CT_DATA_ROOT=/data \
    NO_ALBUMENTATIONS_UPDATE=1 GIT_PYTHON_REFRESH=quiet
WORKDIR /opt/ct
ENTRYPOINT ["tini", "--", "/opt/ct/deploy/entrypoint.sh"]
CMD ["pipelines", "--help"]
