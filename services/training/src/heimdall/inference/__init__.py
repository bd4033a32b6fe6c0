"""One inference path, no database: the ONNX localiser, its contract, model inputs and output formats.

``graph`` (features + standardisation + net + calibration as one torch module), ``onnx_export`` (write
the file), ``verify`` (ONNX Runtime vs the training path's predictions and vs PyTorch, latency),
``contract`` (names, version, metadata keys), ``localizer`` (load a ``model.onnx`` and its metadata,
predict), ``inputs`` (receivers + recordings or power rows → model inputs), ``formats`` (JSON / GeoJSON /
ellipses) and ``publish`` (object store).
"""
