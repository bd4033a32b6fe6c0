"""Importers: outside data into the store, every row (stations included) written through `storage`.

* :mod:`~heimdall.ingest.sigmf` — SigMF recordings in and out (reading in ``sigmf_read``, export in
  ``sigmf_export``, storing in ``sigmf_store``, the ``heimdall`` extension keys in ``sigmf_format``);
* :mod:`~heimdall.ingest.powder` — the POWDER 462.7 MHz RSS dataset (files read in ``powder_read``);
* :mod:`~heimdall.ingest.simulated` — the simulator's sessions as acquisition records.
"""
