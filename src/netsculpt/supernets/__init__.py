"""Elastic super-networks: make any model elastic, train it once, slice out sub-networks.

Usage (``model`` and ``example_inputs`` are yours)::

    import netsculpt as ns

    supernet = ns.elastic(model, example_inputs, ns.ElasticConfig(keep=(0.5, 1.0)))
    small = supernet.extract(supernet.smallest())
"""
