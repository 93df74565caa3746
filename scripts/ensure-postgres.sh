#!/usr/bin/env bash
# Makes sure PostgreSQL's server programs (Debian's postgresql: initdb, pg_ctl, pg_isready) and
# iproute2 (network namespaces) are installed, for the cluster (make cluster, test/cluster/).
set -euo pipefail
need=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-postgres: missing ${need[*]}; install them with your package manager (Debian: sudo apt-get install -y --no-install-recommends ${need[*]})" >&2
  exit 1
fi
echo "ensure-postgres: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
