#!/bin/sh
# Healthy when the frontend serves AND its database answers: `cluster health` alone says SERVING
# while PostgreSQL is down, so this also describes the namespace, which the frontend reads from
# the database. Used by docker-compose.yml's healthcheck and by lab/cluster exactly as here.
# The CLI finds the frontend and its mTLS certificates in TEMPORAL_ADDRESS and TEMPORAL_TLS_*.
set -eu
temporal operator cluster health | grep -q SERVING
temporal operator namespace describe --namespace "${TEMPORAL_NAMESPACE:-default}" >/dev/null
