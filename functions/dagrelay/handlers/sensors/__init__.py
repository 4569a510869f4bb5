"""Built-in sensors (ARCHITECTURE.md, "Sensors"): ``sensor.gcs``, ``sensor.bigquery`` and
``sensor.signal``, each imported on first use of its name. A sensor waits on the deferred-work
mechanism: it checks once, then returns ``Deferred`` with what it waits for, and its poll checks
again every ``poke_interval_s`` until it is found or ``timeout_s`` has passed; nothing is held
between pokes."""
