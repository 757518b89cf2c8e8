"""netsculpt.measurement: parameters, MACs, latency, peak activation memory and weight sparsity.

* :mod:`netsculpt.measurement.api`: ``measure`` (a frozen :class:`Measurement`), ``count_params``,
  ``count_macs``, ``weight_sparsity`` and ``compare_latency`` (interleaved timing of several
  models, the way to tell whether a pruned model is really faster on a noisy machine).
* :mod:`netsculpt.measurement.backends`: the latency backends (``"torch"``, ``"onnxruntime"``)
  and ``register_backend`` to add one.
"""
