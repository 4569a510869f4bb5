"""The benchmark suite, apart from the local stack it drives: ``suite`` runs and reports,
``db`` makes throwaway databases and pipeline shapes, ``engine``, ``fan`` and ``stack`` measure.

Run it with ``make bench``, ``python -m local_emulator bench`` or
``python -m local_emulator.bench``. Nothing outside this package imports it, tests included.
"""
