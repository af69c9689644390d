"""Reference-free training of an exported network with PyTorch Lightning: losses, datasets, demo
data, and the training run (config, data, LightningModule, callbacks, run).

Imports Lightning and the layers below (base, model, inference); never NNI.
"""
