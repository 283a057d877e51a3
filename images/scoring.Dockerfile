# check=skip=InvalidDefaultArgInFrom
# Scoring image: an environment image plus one deployment's model and code folders, laid out
# as Azure ML does (/var/azureml-app), serving with `python -m scoring serve` on port 5001.
# Context: model/ (the model folder), code/ (the scoring script's folder).
# Build args: ENV_IMAGE (an environment.Dockerfile image, pinned by digest),
# ENTRY_SCRIPT (the scoring script, relative to code/; default score.py).
# (The parser directive above: ENV_IMAGE has no default on purpose, the build must name it.)
ARG ENV_IMAGE
FROM ${ENV_IMAGE}
ARG ENTRY_SCRIPT=score.py
COPY model/ /var/azureml-app/model/
COPY code/ /var/azureml-app/code/
ENV AZUREML_MODEL_DIR=/var/azureml-app/model \
    AZUREML_ENTRY_SCRIPT=/var/azureml-app/code/${ENTRY_SCRIPT} \
    WORKER_COUNT=1
WORKDIR /var/azureml-app/code
# Not root: the pods run as 10001 (components/_pods.py) on a read-only root filesystem; the app
# folders are readable by all (the build context's files are staged 0644, folders 0755).
USER 10001:10001
EXPOSE 5001
CMD ["python", "-m", "scoring", "serve"]
