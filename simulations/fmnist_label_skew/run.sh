#!/usr/bin/env bash
# Study 1: ten aggregation strategies on Fashion-MNIST under Dirichlet label skew
# (alpha 0.1 = strong skew, 1.0 = mild), 3 seeds each: 60 runs, about 20 CPU-minutes.
# Writes the run folders and the report into results/ (next to this script).
# Rebuild the report alone: fedlearn-compare report simulations/fmnist_label_skew/results
set -euo pipefail
cd "$(dirname "$0")"
rm -rf results
exec fedlearn-compare \
  strategy=fedavg,fedprox,fedavgm,fedadam,fedyogi,fedadagrad,scaffold,fednova,feddyn,fedmedian \
  partitioner=dirichlet partitioner.alpha=0.1,1.0 \
  seed=0,1,2 \
  dataset=fashion_mnist dataset.max_train=3000 dataset.max_test=1000 \
  model=cnn num_clients=10 num_rounds=10 \
  client.lr=0.05 client.momentum=0.9 client.local_epochs=1 client.batch_size=32 \
  runtime.workers=1 server.checkpoint_every=0 \
  compare.target=0.6 \
  hydra.sweep.dir=results 'hydra.sweep.subdir=${hydra.job.num}'
