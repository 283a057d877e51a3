"""Plain Azure style that never parses: run(raw_data) echoes what it got (CSV, XML, bytes)."""


def init():
    pass


def run(raw_data):
    return {"type": type(raw_data).__name__, "length": len(raw_data), "head": raw_data[:40]}
