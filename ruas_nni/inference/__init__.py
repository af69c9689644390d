"""Running trained networks: the enhance engine, folding, tiling, ONNX, native code, evaluation, metrics,
benchmark.

Imports :mod:`ruas_nni.base` and :mod:`ruas_nni.model` only; never NNI or Lightning, not even
transitively (``tests/test_layers.py`` checks both).
"""
