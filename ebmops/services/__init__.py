"""The steps each flow is made of, as plain functions (no Prefect imports).

``flows/`` wires these into Prefect tasks and flows; tests call them directly. A step takes
settings and data and returns data; side effects go through the ports (state store,
registry, object stores), never hidden globals.
"""
