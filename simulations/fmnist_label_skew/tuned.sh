#!/usr/bin/env bash
# Study 1, tuned (issue 14): ten strategies on Fashion-MNIST under Dirichlet label skew
# (alpha 0.1 and 1.0), every strategy tuned on the validation set with the same budget,
# then compared on the test set over SEEDS, with the centralized baseline and IID runs
# as references; SCAFFOLD, FedNova and FedDyn a second time with plain SGD clients.
#
# Sizes come from the environment (defaults: the issue's minimums, the full training
# set, 100 clients, 10 a round):
#   ROUNDS=100 SEEDS=0,1,2,3,4 TRIALS=8 TUNE_ROUNDS=100 JOBS=2 ./tuned.sh
# STEPS caps each client's local steps a round (default: one whole epoch), EVAL the
# central validation and test samples (default: all), REFS the seeds the references
# run on (default: all). The committed pilot (results_pilot/, README.md) is
#   OUT=results_pilot ROUNDS=20 SEEDS=0,1,2 TRIALS=4 STEPS=5 EVAL=2000 REFS=1 ./tuned.sh
# SMOKE=1 ./tuned.sh checks the whole pipeline at toy size in a few minutes.
# Interrupted, the same command continues where it stopped (finished runs are kept).
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-100} SEEDS=${SEEDS:-0,1,2,3,4} TRIALS=${TRIALS:-8}
TUNE_ROUNDS=${TUNE_ROUNDS:-$ROUNDS} JOBS=${JOBS:-2}
STEPS=${STEPS:-null} EVAL=${EVAL:-null} REFS=${REFS:-}
size=(num_clients=100 strategy.fraction_train=0.1 strategy.fraction_evaluate=0.1)
if [[ "${SMOKE:-0}" == 1 ]]; then
  ROUNDS=2 SEEDS=0,1 TRIALS=2 TUNE_ROUNDS=2 STEPS=5 OUT=${OUT:-smoke}
  size=(num_clients=10 strategy.fraction_train=0.5 strategy.fraction_evaluate=0.5
        dataset.max_train=2000 dataset.max_test=500)
fi
OUT=${OUT:-results_tuned}
common=(
  dataset=fashion_mnist model=cnn "${size[@]}"
  partitioner=dirichlet partitioner.alpha=0.1,1.0 seed="$SEEDS" num_rounds="$ROUNDS"
  client.local_epochs=1 client.batch_size=32 client.max_steps="$STEPS"
  server.central_eval_samples="$EVAL"
  runtime.workers=1 server.checkpoint_every=10
  compare.tune="$TRIALS" compare.tune_rounds="$TUNE_ROUNDS" compare.jobs="$JOBS" compare.target=0.7
  ${REFS:+compare.reference_seeds=$REFS}
)
fedlearn-compare \
  strategy=fedavg,fedprox,fedavgm,fedadam,fedyogi,fedadagrad,scaffold,fednova,feddyn,fedmedian \
  client.momentum=0.9 "${common[@]}" hydra.sweep.dir="$OUT/momentum"
fedlearn-compare strategy=scaffold,fednova,feddyn client.momentum=0.0 "${common[@]}" \
  hydra.sweep.dir="$OUT/plain_sgd"
