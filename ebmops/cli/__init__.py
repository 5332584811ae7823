"""The ``ebmops`` command line: thin over the same services the flows use.

One module per command group; every listing command prints a table for people and takes
``--json`` for machines. Errors print one line naming what is wrong and how to fix it.
"""
