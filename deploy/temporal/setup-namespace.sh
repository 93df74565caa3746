#!/bin/sh
# The `default` namespace and the merge's seven search attributes (src/config/search-attributes.ts),
# then a check that all seven are registered. Safe to run again. Run by docker-compose.yml's
# temporal-namespace job and by lab/cluster (make cluster, test/cluster/) exactly as here.
# The CLI finds the frontend and its mTLS certificates in TEMPORAL_ADDRESS and TEMPORAL_TLS_*.
#
# Each --type pairs with the --name at the same position: one --type per --name.
# Whether the namespace exists is asked with `namespace list`, which names no namespace: a call
# that names one (`namespace describe`) makes the frontend look it up in its namespace registry,
# which remembers "not found" for a second (the registry's read-through cache), so the search
# attributes added right after `namespace create` failed with "Namespace default is not found"
# and a level=ERROR line until that second passed. The retry below stays for a frontend that
# has not loaded the namespace for another reason (a slow database).
set -eu
ns="${TEMPORAL_NAMESPACE:-default}"
temporal operator namespace list --output jsonl | grep -q "\"namespaceInfo\":{\"name\":\"$ns\"" \
  || temporal operator namespace create --namespace "$ns" --retention 30d
names="VmId HostId SnapshotId DiskId MergeOutcome MergeMode ActiveVolumes"
tries=0
until temporal operator search-attribute create --namespace "$ns" \
  --name VmId --type Keyword --name HostId --type Keyword --name SnapshotId --type Keyword \
  --name DiskId --type Keyword --name MergeOutcome --type Keyword \
  --name MergeMode --type Keyword --name ActiveVolumes --type KeywordList; do
  tries=$((tries + 1))
  [ "$tries" -lt 30 ] || { echo "setup-namespace: search attributes not registered after $tries tries" >&2; exit 1; }
  sleep 1
done
list=$(temporal operator search-attribute list --namespace "$ns")
for name in $names; do
  echo "$list" | grep -qw "$name" || { echo "setup-namespace: search attribute $name missing" >&2; exit 1; }
done
echo "setup-namespace: namespace $ns with search attributes $names"
