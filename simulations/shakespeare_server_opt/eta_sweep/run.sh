#!/usr/bin/env bash
# Follow-up to study 2: FedAdam and FedYogi trailed FedAvg at the default server learning
# rate (eta 0.01). Same setup, eta 0.1 and 1.0, 3 seeds: 12 runs, about 10 CPU-minutes.
# Writes results/ next to this script.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf results
exec fedlearn-compare \
  strategy=fedadam,fedyogi strategy.eta=0.1,1.0 \
  seed=0,1,2 \
  dataset=shakespeare dataset.max_clients=20 dataset.max_samples_per_client=160 \
  partitioner=natural num_clients=20 strategy.fraction_train=0.5 \
  model=lstm model.hidden=64 num_rounds=30 \
  client.lr=1.0 client.momentum=0.0 client.local_epochs=1 client.batch_size=4 \
  runtime.workers=1 server.checkpoint_every=0 \
  compare.target=0.25 \
  hydra.sweep.dir=results 'hydra.sweep.subdir=${hydra.job.num}'
