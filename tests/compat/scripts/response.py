"""AMLResponse in every form Azure scripts use, picked by the body's "form"."""

import json

from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def run(raw_data):
    form = json.loads(raw_data)["form"]
    if form == "json_str":
        return AMLResponse({"a": [1, 2]}, 201, json_str=True)
    if form == "none":
        return AMLResponse(None, 202)
    if form == "text":
        return AMLResponse("plain words", 200)
    if form == "text_status":
        return AMLResponse("bad input: no rows", 422)
    if form == "content_type":
        return AMLResponse("<a>1</a>", 200, {"Content-Type": "application/xml"})
    if form == "headers":
        return AMLResponse("ok", 200, {"X-One": "1", "X-Many": "a, b"})
    if form == "failed":
        return AMLResponse("it broke", 500, run_function_failed=True)
    if form == "raise":
        raise ValueError("secret-internal-detail")
    return {"form": form}
