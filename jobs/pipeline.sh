#!/usr/bin/env bash
# Submit the whole pipeline as dependent Slurm jobs and print their ids:
#   simulate (one MPI job, or an array + merge) -> train (submitit) -> invert.
#
#   jobs/pipeline.sh CONFIG OBSERVATIONS
#
# Each job starts only after the previous one succeeded (--dependency=afterok); if one fails,
# Slurm cancels the jobs waiting for it (--kill-on-invalid-dep=yes).
#
# Environment (all optional; sbatch passes the environment on to the jobs):
#   XRM_SIMULATE           "mpi" (default: jobs/simulate.sbatch) or "array"
#                          (jobs/simulate_array.sbatch, then jobs/merge.sbatch)
#   XRM_ARRAY_TASKS        array tasks for XRM_SIMULATE=array (default 4)
#   XRM_SBATCH_ARGS        sbatch options for every job, e.g. "--account=abc --partition=cpu"
#   XRM_SIMULATE_SBATCH_ARGS, XRM_MERGE_SBATCH_ARGS, XRM_TRAIN_SBATCH_ARGS,
#   XRM_INVERT_SBATCH_ARGS sbatch options for one job, e.g. "--nodes=4 --ntasks-per-node=64"
#   XRM_IMAGE, XRM_APPTAINER_ARGS, XRM_BIN, XRM_SRUN_ARGS, XRM_LAUNCHER: see simulate.sbatch
# The training job's own resources come from the config's [slurm] section.
set -euo pipefail
shopt -s inherit_errexit # a failed sbatch inside $(...) stops the script too

if [[ $# -ne 2 ]]; then
    echo "usage: jobs/pipeline.sh CONFIG OBSERVATIONS" >&2
    exit 2
fi
for f in "$1" "$2"; do
    if [[ ! -f "$f" ]]; then
        echo "pipeline.sh: $f: no such file" >&2
        exit 2
    fi
done
config=$(realpath "$1")
observations=$(realpath "$2")
jobs_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

read -r -a common <<<"${XRM_SBATCH_ARGS:-}"

# submit OPTIONS-VARIABLE DEPENDENCY [SBATCH-OPTION...] SCRIPT [ARG...]: sbatch SCRIPT with
# the common options, the dependency, the given options and those in OPTIONS-VARIABLE (last,
# so the user's win); echo the job id
submit() {
    local options_var=$1 dependency=$2
    shift 2
    local -a user dep=() fixed=()
    while [[ "$1" == --* ]]; do
        fixed+=("$1")
        shift
    done
    local script=$1
    shift
    read -r -a user <<<"${!options_var:-}"
    if [[ -n "$dependency" ]]; then
        dep=(--dependency="afterok:$dependency" --kill-on-invalid-dep=yes)
    fi
    local out
    out=$(sbatch --parsable "${common[@]}" "${dep[@]}" "${fixed[@]}" "${user[@]}" \
        "$jobs_dir/$script" "$@")
    echo "${out%%;*}" # --parsable prints "id" or "id;cluster"
}

case "${XRM_SIMULATE:-mpi}" in
mpi)
    simulate=$(submit XRM_SIMULATE_SBATCH_ARGS "" simulate.sbatch "$config")
    echo "simulate $simulate"
    ;;
array)
    tasks=${XRM_ARRAY_TASKS:-4}
    array=$(submit XRM_SIMULATE_SBATCH_ARGS "" --array="0-$((tasks - 1))" \
        simulate_array.sbatch "$config")
    echo "simulate_array $array"
    simulate=$(submit XRM_MERGE_SBATCH_ARGS "$array" merge.sbatch "$config")
    echo "merge $simulate"
    ;;
*)
    echo "XRM_SIMULATE must be mpi or array, not '${XRM_SIMULATE}'" >&2
    exit 2
    ;;
esac

train=$(submit XRM_TRAIN_SBATCH_ARGS "$simulate" train.sbatch "$config")
echo "train $train"
invert=$(submit XRM_INVERT_SBATCH_ARGS "$train" invert.sbatch "$config" "$observations")
echo "invert $invert"
