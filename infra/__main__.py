"""Pulumi entry point (`main: infra/` in Pulumi.yaml): no logic here, see infra/program.py."""

import sys
from pathlib import Path

# The language host runs this folder as a script; make `infra` and `components` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import main

main()
