"""batch_run.py's model with a ``@batched`` run(): it takes a list of bodies, one result each
(same bodies and markers: 999 first sleeps 2 s, a NaN makes the model raise)."""

from batch_run import init, run_batch

from scoring.server.scorer import batched

__all__ = ["init", "run"]

run = batched(run_batch)
