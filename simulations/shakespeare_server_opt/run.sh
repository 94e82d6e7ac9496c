#!/usr/bin/env bash
# Study 2: server optimizers on Shakespeare (LEAF next-character prediction, one client
# per play role) with the character LSTM, scaled down for a CPU: the first 20 roles,
# at most 160 training windows each, a 2x64 LSTM, 10 clients a round, 30 rounds;
# clients as in Reddi et al. 2021 (SGD, lr 1, batch 4, 1 epoch); 3 seeds: 15 runs,
# about 15 CPU-minutes.
# Writes the run folders and the report into results/ (next to this script).
# Rebuild the report alone: fedlearn-compare report simulations/shakespeare_server_opt/results
set -euo pipefail
cd "$(dirname "$0")"
rm -rf results
exec fedlearn-compare \
  strategy=fedavg,fedadam,fedyogi,fedadagrad,fedavgm \
  seed=0,1,2 \
  dataset=shakespeare dataset.max_clients=20 dataset.max_samples_per_client=160 \
  partitioner=natural num_clients=20 strategy.fraction_train=0.5 \
  model=lstm model.hidden=64 num_rounds=30 \
  client.lr=1.0 client.momentum=0.0 client.local_epochs=1 client.batch_size=4 \
  runtime.workers=1 server.checkpoint_every=0 \
  compare.target=0.25 \
  hydra.sweep.dir=results 'hydra.sweep.subdir=${hydra.job.num}'
