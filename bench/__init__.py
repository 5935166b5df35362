"""`make bench`: the service measured side by side with its baseline, on this machine, in one run.

`python -m bench` runs every stage (see __main__), prints a Markdown table and writes it,
with the machine's description, to docs/benchmarks.md.
"""
