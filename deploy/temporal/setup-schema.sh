#!/bin/sh
# Creates the `temporal` and `temporal_visibility` databases and brings their schemas to the
# server's version, with the schemas built into temporal-sql-tool. Safe to run again (and after a
# server upgrade it applies the new schema versions). Run by docker-compose.yml's temporal-schema
# job and by lab/cluster (make cluster, test/cluster/) exactly as here.
# Environment: SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD (temporal-sql-tool's own).
set -eu
for db in temporal temporal_visibility; do
  case "$db" in temporal) schema=postgresql/v12/temporal ;; *) schema=postgresql/v12/visibility ;; esac
  temporal-sql-tool --plugin postgres12 --db "$db" create-database 2>&1 | grep -v 'already exists' || true
  temporal-sql-tool --plugin postgres12 --db "$db" setup-schema -v 0.0
  temporal-sql-tool --plugin postgres12 --db "$db" update-schema --schema-name "$schema"
done
