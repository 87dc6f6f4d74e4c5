"""Everything around the model (`replay/`): configuration, trace files, running on Dask,
analysis, reports and trace generators, one subpackage per role. Data flows one way:

    config ──┐
    tracefile ─→ run (shard → replay → counts → results) ─→ analysis ─→ reports ─→ cli
    generate (writes trace files)

Each subpackage imports only those to its left (its docstring says which), `replay`, and
the two shared utilities here: `atomic` (write a file under a temporary name, then rename)
and `text` (trace- and user-supplied text made safe for the terminal). `cli.py` is the
only module that reads the command line.
"""
