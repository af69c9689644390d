"""The architecture search: the runner around NNI's one-shot strategies (config, strategy factory,
callbacks, alpha heatmap, ``run_search``).

Imports NNI, Lightning, :mod:`search_spaces`, :mod:`strategies` and the layers below.
"""
