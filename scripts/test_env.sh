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

# The numerically sensitive tests (docs/testing.md): every float32
# equivalence of a layout with one rank (in-process and through the binary),
# the resume tests, the gradient check, the PyTorch-reference tests, document
# masking (float64) and activation recompute (bitwise).
# A ctest -R pattern.
MT_NUMERICAL_TESTS='BackendOps|mpi[0-9]+\.(parallel|pipeline|data_parallel|expert_parallel)|ExpertParallel\.|TensorParallel(Float|Double)|PipelineParallel\.|DataParallel\.|TensorParallelRun\.Two|PipelineRun\.Stages|DataParallelRun\.Every|CheckpointResume\.(Stopping|CheckpointsMove)|EvalLayouts|TorchReference|GradCheck|Documents|ActivationRecompute|Inspect\.TorchModel|EndToEnd'
export MT_NUMERICAL_TESTS
