"""@rawhttp: run(request) reads bytes, forms, files, query arguments and JSON itself."""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp  # noqa: F401
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.method == "GET":
        return {"args": {k: request.args.getlist(k) for k in sorted(request.args)}}
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        data = request.get_data()
        return AMLResponse(data[::-1], 200, {"Content-Type": "application/octet-stream"})
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        files = {name: [f.filename, len(f.read())] for name, f in request.files.items()}
        return {"form": dict(request.form), "files": files}
    if request.is_json:
        return {"json": request.get_json(), "query": dict(request.args)}
    return AMLResponse("send an image, a form or JSON", 400)
