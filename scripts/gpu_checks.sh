#!/usr/bin/env bash
# Every GPU check of the project in one call of under 9 minutes, for a machine lent for a few minutes
# (docs/benchmarks/gpu_checks.md): the cores' speed with and without the Triton kernels, PPO's throughput at 64 envs,
# then Pong with delta and lstm side by side for the minutes left. Writes into $OUT (default gpu_checks/):
#   log.txt           everything printed, the machine first
#   cores.json        fwp-rl bench cores on CUDA, the Triton kernels on (each core's form in the title)
#   cores_pytorch.json  the step-loop cores with FWP_RL_TRITON=0 at the first length, for the kernels' gain
#   ppo.json          fwp-rl bench ppo on CUDA with $NUM_ENVS envs: env-only and training steps/s
#   pong_curves.png, pong_table.md  fwp-rl compare of the two Pong runs
#
# usage: OUT=dir [BUDGET=510] [DEVICE=cuda] [NUM_ENVS=64] [SEQ_LENS=128,512] scripts/gpu_checks.sh
# FWP_RL names the command (default: fwp-rl), PYTHON the interpreter that has torch (default: python3). Each step
# has a time limit, and a step that fails does not stop the others: the log says which failed.
set -uo pipefail

OUT=${OUT:-gpu_checks}
BUDGET=${BUDGET:-510}
DEVICE=${DEVICE:-cuda}
NUM_ENVS=${NUM_ENVS:-64}
SEQ_LENS=${SEQ_LENS:-128,512}
FWP_RL=${FWP_RL:-fwp-rl}
PYTHON=${PYTHON:-python3}
RUNS=$(mktemp -d)
START=$SECONDS
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

left() { echo $((BUDGET - (SECONDS - START))); }
step() {  # step LIMIT_SECONDS COMMAND...: run it within its limit, say how it ended
    local limit=$1
    shift
    echo "== $(date +%T) $* (at most ${limit} s)"
    timeout -s INT -k 20 "$limit" "$@" || echo "== exit status $? (124: stopped at its limit)"
}

nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
$PYTHON -c "import triton; print('triton', triton.__version__)" || echo "no Triton"

cores=lstm,gru,delta,gated_delta,rdn,delta_rnn,delta_lstm,srwm,direct
step 180 $FWP_RL bench cores --device "$DEVICE" --repeats 3 --seq-lens "$SEQ_LENS" --cores "$cores" \
    --json "$OUT/cores.json"
step 60 env FWP_RL_TRITON=0 $FWP_RL bench cores --device "$DEVICE" --repeats 3 --seq-lens "${SEQ_LENS%%,*}" \
    --cores rdn,delta_rnn,delta_lstm,srwm --json "$OUT/cores_pytorch.json"
step 100 $FWP_RL bench ppo --device "$DEVICE" --num-envs "$NUM_ENVS" --json "$OUT/ppo.json"

# Pong: delta and lstm at once for the time left, stopped by Ctrl-C (each checkpoints and logs what it reached)
pong=$(( $(left) - 40 ))
if (( pong > 30 )); then
    pids=()
    for core in delta lstm; do
        step "$pong" $FWP_RL train "configs/atari/pong_$core.yaml" --set "ppo.device=$DEVICE" \
            --set "env.num_envs=$NUM_ENVS" --set "run.root=$RUNS" --set run.wandb=disabled &
        pids+=($!)
    done
    wait "${pids[@]}"  # these two: a bare wait would also wait for the log's tee
    step 30 $FWP_RL compare "$RUNS" --out "$RUNS/compare" --force \
        && cp "$RUNS/compare/curves.png" "$OUT/pong_curves.png" && cp "$RUNS/compare/table.md" "$OUT/pong_table.md"
else
    echo "== no time left for Pong"
fi
echo "== done in $((SECONDS - START)) s"
