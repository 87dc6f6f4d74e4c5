"""Reports: the terminal tables (`terminal.py`), the self-contained HTML page
(`html_page.py`), and what both read from a results folder (`data.py`); what `import` and
`kvm-stat` print about the text traces they read (`text_traces.py`).

May import: every other subpackage but `generate`, `replay`, `pipeline.atomic`, `pipeline.text`.
"""
