# Sourced (bash) by scripts that start ranks with Open MPI's mpirun in a sandbox: exports the
# settings of scripts/mpi-sandbox.conf for a profile, `one-node` (every rank on this machine)
# or `nodes` (ranks on several virtual nodes of deploy/local-cluster):
#   . scripts/mpi-env.sh one-node
_belay_mpi_profile=${1:-}
_belay_mpi_conf="$(dirname "${BASH_SOURCE[0]}")/mpi-sandbox.conf"
if [ -z "$_belay_mpi_profile" ] || [ "$_belay_mpi_profile" = common ] ||
  ! grep -qx "\[$_belay_mpi_profile\]" "$_belay_mpi_conf"; then
  echo "mpi-env.sh: profile '$_belay_mpi_profile' is not one of $_belay_mpi_conf's" >&2
  return 2 2>/dev/null || exit 2
fi
_belay_mpi_section=
while IFS= read -r _belay_mpi_line || [ -n "$_belay_mpi_line" ]; do
  case $_belay_mpi_line in
    '' | '#'*) ;;
    '['*']') _belay_mpi_section=${_belay_mpi_line#[} _belay_mpi_section=${_belay_mpi_section%]} ;;
    *=*)
      if [ "$_belay_mpi_section" = common ] || [ "$_belay_mpi_section" = "$_belay_mpi_profile" ]; then
        export "${_belay_mpi_line%%=*}=${_belay_mpi_line#*=}"
      fi
      ;;
  esac
done <"$_belay_mpi_conf"
unset _belay_mpi_profile _belay_mpi_conf _belay_mpi_section _belay_mpi_line
