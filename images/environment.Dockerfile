# Environment image: a Python base plus the project's scoring server (the ml-endpoints wheel)
# and the environment's pip requirements, installed only from the host's wheels (the named build
# context `wheels`, made by scripts/wheelhouse.sh), so the build runs with no network.
# Context: requirements.txt; named context `wheels`: *.whl (BuildKit, components/_images.py).
# Build args: BASE_IMAGE (python:3.11-slim online; the debootstrap base offline, see
# scripts/base_image.sh), PYTHON_VERSION (checked against the base's python3), SERVER_EXTRAS
# (the server's extras, comma-separated: `s3` adds boto3 for shipping collected data to S3).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG PYTHON_VERSION=3.11
ARG SERVER_EXTRAS=
COPY --from=wheels . /tmp/wheels/
COPY requirements.txt /tmp/requirements.txt
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(0 if v == '${PYTHON_VERSION}' else 'base image python is ' + v + ', expected ${PYTHON_VERSION}')" \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels --disable-pip-version-check \
      "ml-endpoints${SERVER_EXTRAS:+[$SERVER_EXTRAS]}" -r /tmp/requirements.txt \
 && /opt/venv/bin/python -c "import scoring.server.supervisor" \
 && case ",${SERVER_EXTRAS}," in *,s3,*) /opt/venv/bin/python -c "import boto3" ;; esac

# The wheels stay in the build stage: only the installed venv is copied.
FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
COPY requirements.txt /opt/venv/requirements.txt
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
CMD ["python", "-m", "scoring", "--help"]
