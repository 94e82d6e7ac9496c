#!/usr/bin/env bash
# Study 2, tuned (issue 14): FedAvg, FedAvgM and the adaptive server optimizers on
# Shakespeare with the character LSTM, client and server learning rates tuned on the
# validation set (the last 10% of each role's train windows) with the same budget,
# compared on the test set, with the centralized baseline and IID runs as references.
# Clients: CLIENTS roles spread over all plays (dataset.pick=spread), at their own sizes
# up to CAP train windows, 10 a round; clients train as in Reddi et al. 2021 (SGD, no
# momentum, batch 4, one epoch, at most STEPS steps).
#   CLIENTS=100 ROUNDS=100 SEEDS=0,1,2 TRIALS=8 CAP=2000 STEPS=100 JOBS=2 ./tuned.sh
# REFS: the seeds the references run on (default: all).
# SMOKE=1 ./tuned.sh checks the whole pipeline at toy size in a few minutes.
set -euo pipefail
cd "$(dirname "$0")"
CLIENTS=${CLIENTS:-100} ROUNDS=${ROUNDS:-100} SEEDS=${SEEDS:-0,1,2} TRIALS=${TRIALS:-8}
CAP=${CAP:-2000} STEPS=${STEPS:-100} HIDDEN=${HIDDEN:-128} JOBS=${JOBS:-2}
TUNE_ROUNDS=${TUNE_ROUNDS:-$ROUNDS} EVAL=${EVAL:-4000} REFS=${REFS:-}
if [[ "${SMOKE:-0}" == 1 ]]; then
  CLIENTS=20 ROUNDS=2 SEEDS=0,1 TRIALS=2 CAP=200 STEPS=5 HIDDEN=32 TUNE_ROUNDS=2
  OUT=${OUT:-smoke} EVAL=500
fi
OUT=${OUT:-results_tuned}
fedlearn-compare strategy=fedavg,fedavgm,fedadam,fedyogi,fedadagrad \
  dataset=shakespeare partitioner=natural dataset.pick=spread \
  dataset.max_clients="$CLIENTS" dataset.max_samples_per_client="$CAP" \
  num_clients="$CLIENTS" strategy.fraction_train=0.1 strategy.fraction_evaluate=0.1 \
  model=lstm model.hidden="$HIDDEN" num_rounds="$ROUNDS" seed="$SEEDS" \
  client.momentum=0.0 client.batch_size=4 client.local_epochs=1 client.max_steps="$STEPS" \
  server.central_eval_samples="$EVAL" runtime.workers=1 server.checkpoint_every=10 \
  compare.tune="$TRIALS" compare.tune_rounds="$TUNE_ROUNDS" compare.jobs="$JOBS" \
  compare.target=0.3 ${REFS:+compare.reference_seeds=$REFS} hydra.sweep.dir="$OUT"
