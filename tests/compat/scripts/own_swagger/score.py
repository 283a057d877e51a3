"""A plain script shipping its own swagger2.json and swagger3.json beside it."""

import json


def init():
    pass


def run(raw_data):
    return json.loads(raw_data)
