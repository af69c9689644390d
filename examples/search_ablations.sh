#!/bin/sh
# The paper's Fig. 9 comparison on the same space, data and seed: the cooperative search, its two
# ablations and NNI's two DARTS baselines. Each run writes runs/ablations/<strategy>/arch.json and
# TensorBoard logs (tensorboard --logdir runs/ablations).
set -e
for strategy in cooperative separate joint darts gumbel-darts; do
    ruas-nni search --config examples/search.yaml --strategy "$strategy" --out "runs/ablations/$strategy" "$@"
done
