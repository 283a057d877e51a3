"""Answers the name of the thread that scored the request (batching: run_batch too)."""

import threading


def run(raw_data):
    return threading.current_thread().name


def run_batch(raw_data_list):
    return [threading.current_thread().name for _ in raw_data_list]
