"""`make bench`: the service measured side by side with its baseline, on this machine, in one run.

`python -m bench` runs every stage (see __main__), prints a Markdown table and writes it,
with the machine's description, to docs/benchmarks.md.
"""

import sys
from pathlib import Path

# The service-process wrapper (service_process) and its polling helper are the tests' own.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
