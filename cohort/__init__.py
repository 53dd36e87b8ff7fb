"""Cohorts on disk: MSD-layout I/O (used by the server and the simulator) and the synthetic CT generator.

Serving reads studies through :mod:`cohort.msd`; nothing here imports the simulator (:mod:`sim`).
"""
