"""run() raises: the caller must get a 500 without the traceback."""


def init():
    pass


def run(raw_data):
    raise ValueError("secret-internal-detail: the model exploded")
