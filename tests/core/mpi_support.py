"""What the MPI tests' tasks need from Open MPI on the test machines."""

# Open MPI as root, over loopback TCP only (its shared-memory transport crashed with several
# ranks per node where this was measured: /work/shared/notes/slurm.md).
OPEN_MPI = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_btl": "self,tcp",
    "OMPI_MCA_btl_tcp_if_include": "lo",
    "OMPI_MCA_oob_tcp_if_include": "lo",
}
