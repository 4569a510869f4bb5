"""The checkout's tools around the local stack, which ships in the package (``dagrelay.local``,
the ``local`` extra): ``python -m local_emulator up|down|demo|worker`` runs the same commands as
``dagrelay local``, plus ``bench`` (local_emulator/bench/) and ``coldstart`` (measurements)."""
