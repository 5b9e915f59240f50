# Sourced by scripts that start CPU ranks with Open MPI's mpirun on one machine: settings
# that make it work in containers and as root, and keep its traffic on loopback.
#   - mpirun refuses to run as root unless told twice (CI containers run as root);
#   - ranks on one node talk over shared memory (vader) without the kernel's cross-memory
#     attach, which containers often forbid;
#   - mpirun's control traffic and any TCP transport stay on loopback;
#   - more ranks than cores are allowed (oversubscription).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_btl_tcp_if_include=lo
export OMPI_MCA_rmaps_base_oversubscribe=1
