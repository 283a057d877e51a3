# Runtime image for the endpoint router (and any process that needs only the ml-endpoints
# package): a Python base plus the project wheel and its runtime dependencies, installed from
# the host's wheels (the named build context `wheels`, scripts/wheelhouse.sh) with no network.
# Named context `wheels`: *.whl (BuildKit, components/_images.py). Build arg: BASE_IMAGE.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY --from=wheels . /tmp/wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels --disable-pip-version-check ml-endpoints \
 && /opt/venv/bin/python -c "import scoring.router.main"

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Not root: the pods run as 10001 (components/_pods.py) on a read-only root filesystem.
USER 10001:10001
EXPOSE 8080
CMD ["python", "-m", "scoring", "router", "--config", "/etc/ml-endpoints/router.json", "--port", "8080"]
