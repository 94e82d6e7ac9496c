#!/usr/bin/env bash
# Follow-up to study 1: SCAFFOLD diverged at the study's client step size (lr 0.05 with
# momentum 0.9). Same setup, FedAvg and SCAFFOLD at a 5x smaller client lr (0.01).
# 12 runs, about 5 CPU-minutes. Writes results/ next to this script.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf results
exec fedlearn-compare \
  strategy=fedavg,scaffold \
  partitioner=dirichlet partitioner.alpha=0.1,1.0 \
  seed=0,1,2 \
  dataset=fashion_mnist dataset.max_train=3000 dataset.max_test=1000 \
  model=cnn num_clients=10 num_rounds=10 \
  client.lr=0.01 client.momentum=0.9 client.local_epochs=1 client.batch_size=32 \
  runtime.workers=1 server.checkpoint_every=0 \
  compare.target=0.6 \
  hydra.sweep.dir=results 'hydra.sweep.subdir=${hydra.job.num}'
