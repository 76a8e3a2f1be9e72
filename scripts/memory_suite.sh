#!/usr/bin/env bash
# The memory suite's comparison (docs/memory_tasks.md, "The whole suite"): PPO with six cores on the tasks of the suite
# at the given settings and seeds, one run each in runs/suite/seed_<k>/<Task>_<setting>_<core>/, then one report per
# task and setting in docs/memory_suite/<Task>_<setting>/ (fwp-rl compare, the LSTM as reference).
#
# Stopped and started again, it goes on where it stopped: a run it finished is skipped (runs/suite/finished.txt lists
# them) and one it started is resumed. A bash loop rather than one `train --seeds` per group, because each run sets
# its own task, setting and name on top of a shared config, and the order (easy before medium, every core of a task
# before the next task) lets the report of a task be made before the whole suite is done.
#
# usage: scripts/memory_suite.sh [SETTINGS] [SEEDS] [TASKS]
#   SETTINGS  comma-separated difficulties (default: easy,medium)
#   SEEDS     first-last (default: 10-14)
#   TASKS     comma-separated task names (default: all six)
# WORKERS=N runs N trainings at a time (default 1), each with one thread; FWP_RL=... names the fwp-rl command.
set -euo pipefail

settings=${1:-easy,medium}
seeds=${2:-10-14}
tasks=${3:-RepeatPrevious,CountCards,RepeatSequence,Recall,CartPoleNoVel,PendulumNoVel}
cores=(lstm gru delta gated_delta rdn memoryless)
export FWP_RL=${FWP_RL:-fwp-rl}
export ROOT=runs/suite
mkdir -p "$ROOT/logs"
touch "$ROOT/finished.txt"

# one run: TASK SETTING CORE SEED
run_one() {
    local task=$1 setting=$2 core=$3 seed=$4 kind=symbols options="{difficulty: $2}"
    case $task in
        CartPoleNoVel) kind=control options="{difficulty: $setting, normalize: true}" ;;
        PendulumNoVel) kind=control ;;
    esac
    local name=${task}_${setting}_${core} dir=$ROOT/seed_$seed/${task}_${setting}_${core}
    local log=$ROOT/logs/seed_${seed}_$name.log
    grep -qxF "$dir" "$ROOT/finished.txt" && return 0
    if [[ -f $dir/config.yaml ]]; then
        OMP_NUM_THREADS=1 $FWP_RL train --resume "$dir" >> "$log" 2>&1
    else
        rm -rf "$dir"  # a directory without its config: cut short before anything was written
        OMP_NUM_THREADS=1 $FWP_RL train "configs/memory/suite_${kind}_${core}.yaml" --set "seed=$seed" \
            --set "name=$name" --set "env.id=fwp_rl/${task}-v0" --set "env.options=$options" \
            --set "run.root=$ROOT/seed_$seed" --set run.wandb=disabled > "$log" 2>&1
    fi || { echo "$(date +%T) failed $dir: see $log"; return 1; }
    echo "$dir" >> "$ROOT/finished.txt"
    echo "$(date +%T) finished $dir"
}
export -f run_one

first=${seeds%-*} last=${seeds#*-}
failed=0
for setting in ${settings//,/ }; do
    for task in ${tasks//,/ }; do
        for core in "${cores[@]}"; do
            for seed in $(seq "$first" "$last"); do
                echo "$task $setting $core $seed"
            done
        done | xargs -P "${WORKERS:-1}" -L 1 bash -c 'run_one "$@"' _ || failed=1
        $FWP_RL compare $(for s in $(seq "$first" "$last"); do echo "$ROOT/seed_$s/${task}_${setting}_"*; done) \
            --metric eval/return_mean --window 3 --reference "${task}_${setting}_lstm" \
            --out "docs/memory_suite/${task}_${setting}" --force
    done
done
exit $failed
