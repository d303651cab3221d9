# Sourced by scripts/test.sh and scripts/test_blas_kernels.sh: the
# environment the multi-rank tests need.
# Let tests run mpirun as root and with more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# With two ranks or fewer OpenMPI pins each rank to one core; don't, so that
# ranks and their threads share the machine's cores freely.
export OMPI_MCA_hwloc_base_binding_policy="${OMPI_MCA_hwloc_base_binding_policy:-none}"
# Containers often forbid the cross-memory attach OpenMPI uses by default.
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
# The tests' ranks share one machine: Open MPI's ob1 messaging, without
# probing for UCX, starts each process 0.2 s sooner (hundreds of processes).
export OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"

# The numerically sensitive tests (docs/testing.md): every float32
# equivalence of a layout with one rank (in-process, at 2, 4 and 8 ranks,
# and through the binary), the resume across layouts, the gradient check,
# the PyTorch-reference tests, document masking (float64) and the bf16 and
# learning end-to-end runs: each bound derived from the rounding. Tests
# that compare bit for bit (activation recompute, stop and resume on one
# layout) hold under any kernels and are left to the main run, as is the
# 15-stage pipeline, the 8-stage one's claim with more stages.
# A ctest -R pattern.
MT_NUMERICAL_TESTS='BackendOps|mpi[248]\.(parallel|pipeline|data_parallel|expert_parallel|sequence_parallel|ring_attention|context_parallel)|RingAttention|ContextParallel|ExpertParallel\.|TensorParallel(Float|Double)|PipelineParallel\.|DataParallel\.|TensorParallelRun\.Two|PipelineRun\.Stages|DataParallelRun\.Every|CheckpointResume\.CheckpointsMove|EvalLayouts|TorchReference|GradCheck|Documents|Inspect\.TorchModel|EndToEnd\.(Bf16|Save|Tiny)|KvCache|Generate\.(Greedy|TheCache|Batching|Torch)'
export MT_NUMERICAL_TESTS
