#!/usr/bin/env bash
# Checks scripts/slurm/train.sbatch without Slurm: under the SLURM_*
# variables a 2-node, 16-rank job sees, its dry run must print exactly the
# expected launch line (srun fresh, srun resuming, mpirun) and resubmit
# decision (finished, stopped early, guard reached, failed, SIGTERM); then it
# runs for real against stand-in srun and sbatch commands, once to the end
# and once sent SIGUSR1, which it must pass to the step and answer with the
# expected resubmission.
#
#   bash tests/slurm/test_train_sbatch.sh
#
# Needs bash, coreutils and grep only; exits non-zero naming the first mismatch.
set -euo pipefail

script=$(cd "$(dirname "$0")/../../scripts/slurm" && pwd)/train.sbatch
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The directory the job starts in; MOETRAIN defaults to build/moetrain under it.
cd "$tmp"
save="$tmp/save dir"  # a space, to check the quoting
mkdir -p "$save" stubs

fail() {
    echo "test_train_sbatch: FAIL: $*" >&2
    exit 1
}

# Stand-ins on PATH. A dry run must call none of them: each call is logged.
for tool in sbatch srun mpirun scontrol; do
    cat >"stubs/$tool" <<EOF
#!/usr/bin/env bash
printf '%s\n' "\$*" >>"$tmp/calls.$tool"
if [[ $tool == srun && -n \${STUB_SRUN:-} ]]; then exec bash "\$STUB_SRUN"; fi
EOF
    chmod +x "stubs/$tool"
done
# A step that runs to the end.
cat >step_finishes.sh <<'EOF'
echo "iteration 10/10 | loss 5.1"
echo "saved checkpoint run/ckpt/iter_0000010"
EOF
# A step that waits for SIGUSR1 and stops as moetrain does.
cat >step_waits.sh <<EOF
trap 'echo "received SIGUSR1: saving at iteration 7 and stopping"; exit 0' USR1
touch "$tmp/step_started"
for _ in \$(seq 300); do sleep 0.1; done
echo "step_waits.sh: no SIGUSR1 within 30 s" >&2
exit 1
EOF

# The environment of the job, and nothing else: what Slurm sets in a 2-node
# job of 8 ranks a node on 64-CPU nodes, the stand-ins first on PATH.
job_env=(PATH="$tmp/stubs:$PATH" HOME="$tmp" TMPDIR="$tmp"
         SLURM_JOB_ID=4242 SLURM_JOB_NAME=moetrain SLURM_JOB_NUM_NODES=2 SLURM_NNODES=2
         SLURM_NTASKS=16 SLURM_NTASKS_PER_NODE=8 SLURM_TASKS_PER_NODE='8(x2)' SLURM_CPUS_ON_NODE=64
         SLURM_JOB_NODELIST='node[01-02]' SLURM_SUBMIT_DIR="$tmp" SAVE="$save")

# Runs the script in the job's environment plus NAME=VALUE words; after --,
# the train flags.
job() {
    local -a vars=()
    while [[ $1 != -- ]]; do
        vars+=("$1")
        shift
    done
    shift
    env -i "${job_env[@]}" "${vars[@]}" bash "$script" "$@"
}

# check NAME EXPECTED ACTUAL
check() {
    if [[ $2 != "$3" ]]; then
        printf 'test_train_sbatch: FAIL: %s\n--- expected\n%s\n--- got\n%s\n' "$1" "$2" "$3" >&2
        exit 1
    fi
    echo "ok: $1"
}

train_tail="$tmp/build/moetrain train --config configs/workstation-moe.toml --tp 2 --pp 2 --save $tmp/save\\ dir"
srun_head="srun --ntasks=16 --ntasks-per-node=8 --distribution=block --kill-on-bad-exit=1 --mpi=pmix --cpus-per-task=8"

check "srun, fresh start" \
"launch: $srun_head $train_tail --train-iters 10
resubmit: no (the run finished)" \
"$(job MT_SLURM_DRY_RUN=1 -- --train-iters 10)"

echo 40 >"$save/latest"
check "srun, resuming from SAVE/latest (--load), TP/PP and stores from the environment" \
"launch: $srun_head $tmp/build/moetrain train --config configs/workstation-moe.toml --tp 8 --pp 2 --data-path text=run/text code=run/code --save $tmp/save\\ dir --load $tmp/save\\ dir
resubmit: no (the run finished)" \
"$(job MT_SLURM_DRY_RUN=1 TP=8 DATA='text=run/text code=run/code' --)"

check "mpirun inside the allocation" \
"launch: mpirun -np 16 --map-by ppr:8:node --bind-to none $train_tail --load $tmp/save\\ dir --log-interval 5
resubmit: no (the run finished)" \
"$(job MT_SLURM_DRY_RUN=1 LAUNCHER=mpirun -- --log-interval 5)"

check "srun with --cpus-per-task from the job, site default MPI" \
"launch: srun --ntasks=16 --ntasks-per-node=8 --distribution=block --kill-on-bad-exit=1 --cpus-per-task=12 $train_tail --load $tmp/save\\ dir
resubmit: no (the run finished)" \
"$(job MT_SLURM_DRY_RUN=1 SLURM_CPUS_PER_TASK=12 MT_SRUN_MPI= --)"

# Resubmit decisions: what the step printed and its exit status.
printf 'iteration 7/100 | loss 5.3\nreceived SIGUSR1: saving at iteration 7 and stopping\nsaved checkpoint\n' >stopped_usr1.out
printf 'received SIGTERM: saving at iteration 7 and stopping\n' >stopped_term.out
launch_line="launch: $srun_head $train_tail --load $tmp/save\\ dir --train-iters 100"

check "stopped early by SIGUSR1: resubmitted" \
"$launch_line
resubmit: yes (stopped early at iteration 7; resubmission 1 of at most 20)
resubmit command: sbatch --dependency=singleton --job-name=moetrain --nodes=2 --ntasks-per-node=8 --export=ALL\\,MT_RESUBMIT_COUNT=1 $script --train-iters 100" \
"$(job MT_SLURM_DRY_RUN=1 MT_SLURM_DRY_RUN_STEP_OUTPUT=stopped_usr1.out -- --train-iters 100)"

check "stopped early, 4th resubmission" \
"$launch_line
resubmit: yes (stopped early at iteration 7; resubmission 4 of at most 20)
resubmit command: sbatch --dependency=singleton --job-name=moetrain --nodes=2 --ntasks-per-node=8 --export=ALL\\,MT_RESUBMIT_COUNT=4 $script --train-iters 100" \
"$(job MT_SLURM_DRY_RUN=1 MT_SLURM_DRY_RUN_STEP_OUTPUT=stopped_usr1.out MT_RESUBMIT_COUNT=3 -- --train-iters 100)"

check "stopped early, MT_MAX_RESUBMITS reached" \
"$launch_line
resubmit: no (stopped early at iteration 7, but this job is resubmission 20 and MT_MAX_RESUBMITS is 20)" \
"$(job MT_SLURM_DRY_RUN=1 MT_SLURM_DRY_RUN_STEP_OUTPUT=stopped_usr1.out MT_RESUBMIT_COUNT=20 -- --train-iters 100)"

check "stopped early, resubmission off (MT_MAX_RESUBMITS=0)" \
"$launch_line
resubmit: no (stopped early at iteration 7, but this job is resubmission 0 and MT_MAX_RESUBMITS is 0)" \
"$(job MT_SLURM_DRY_RUN=1 MT_SLURM_DRY_RUN_STEP_OUTPUT=stopped_usr1.out MT_MAX_RESUBMITS=0 -- --train-iters 100)"

check "stopped by SIGTERM (scancel): not resubmitted" \
"$launch_line
resubmit: no (the step stopped early on SIGTERM: saving at iteration 7: only SIGUSR1 (the time-limit warning) resubmits)" \
"$(job MT_SLURM_DRY_RUN=1 MT_SLURM_DRY_RUN_STEP_OUTPUT=stopped_term.out -- --train-iters 100)"

check "the step failed: not resubmitted" \
"$launch_line
resubmit: no (the step failed (exit status 1): a failure is not retried)" \
"$(job MT_SLURM_DRY_RUN=1 MT_SLURM_DRY_RUN_STEP_OUTPUT=stopped_usr1.out MT_SLURM_DRY_RUN_STEP_STATUS=1 -- --train-iters 100)"

for tool in sbatch srun mpirun scontrol; do
    [[ ! -e calls.$tool ]] || fail "a dry run called $tool: $(cat "calls.$tool")"
done
echo "ok: the dry runs called none of sbatch, srun, mpirun, scontrol"

# Bad settings are refused before anything runs.
if job MT_SLURM_DRY_RUN=1 LAUNCHER=ssh -- >/dev/null 2>err.txt; then fail "LAUNCHER=ssh was accepted"; fi
grep -q "LAUNCHER must be srun or mpirun, got 'ssh'" err.txt || fail "LAUNCHER=ssh: $(cat err.txt)"
if env -i PATH="$PATH" bash "$script" >/dev/null 2>err.txt; then fail "ran outside a job"; fi
grep -q "SLURM_JOB_ID is not set" err.txt || fail "outside a job: $(cat err.txt)"
echo "ok: a bad LAUNCHER and a missing job are refused"

# For real, against the stand-ins: a step that runs to the end is not resubmitted.
job STUB_SRUN="$tmp/step_finishes.sh" -- --train-iters 10 >job1.out 2>&1 || fail "job 1 failed: $(cat job1.out)"
check "real run to the end: srun's arguments" \
"--ntasks=16 --ntasks-per-node=8 --distribution=block --kill-on-bad-exit=1 --mpi=pmix --cpus-per-task=8 $tmp/build/moetrain train --config configs/workstation-moe.toml --tp 2 --pp 2 --save $tmp/save dir --load $tmp/save dir --train-iters 10" \
"$(cat calls.srun)"
grep -qx "saved checkpoint run/ckpt/iter_0000010" job1.out || fail "the step's output is not in the job's: $(cat job1.out)"
grep -qx "train.sbatch: resubmit: no (the run finished)" job1.out || fail "job 1's decision: $(cat job1.out)"
[[ ! -e calls.sbatch ]] || fail "a finished run was resubmitted: $(cat calls.sbatch)"
echo "ok: real run to the end, not resubmitted"

# SIGUSR1 to the batch shell (what --signal=B:USR1@120 sends) reaches the step,
# which saves and exits 0; the job resubmits itself.
# env execs bash: $! is the batch shell itself.
env -i "${job_env[@]}" STUB_SRUN="$tmp/step_waits.sh" MT_RESUBMIT_COUNT=2 bash "$script" --train-iters 100 \
    >job2.out 2>&1 &
job_pid=$!
for _ in $(seq 200); do
    [[ -e step_started ]] && break
    sleep 0.1
done
[[ -e step_started ]] || fail "the step did not start within 20 s: $(cat job2.out)"
kill -USR1 "$job_pid"
status=0
wait "$job_pid" || status=$?
(( status == 0 )) || fail "job 2 exited with status $status: $(cat job2.out)"
grep -qx "received SIGUSR1: saving at iteration 7 and stopping" job2.out || fail "SIGUSR1 did not reach the step: $(cat job2.out)"
check "real run stopped by SIGUSR1: sbatch's arguments" \
"--dependency=singleton --job-name=moetrain --nodes=2 --ntasks-per-node=8 --export=ALL,MT_RESUBMIT_COUNT=3 $script --train-iters 100" \
"$(cat calls.sbatch)"
echo "test_train_sbatch: all passed"
