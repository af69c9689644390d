"""The architecture search: the runner around NNI's one-shot strategies (config, strategy factory,
callbacks, architecture probabilities, ``run_search``) and the figures of searches and experiments
(matplotlib: architecture heatmaps, PSNR against parameters).

Imports NNI, Lightning, :mod:`search_spaces`, :mod:`strategies` and the layers below.
"""
