#!/usr/bin/env bash
# Generates a Java client from the committed OpenAPI document
# (api/openapi.json) with openapi-generator, the most used generator, and
# compiles it: the document is shown usable by client teams, not only
# valid. The generator and the client's dependencies come from Maven
# Central (scripts/openapi-client/pom.xml pins them) into ~/.m2.
#
#   scripts/check-openapi-client.sh
#
# That the committed document is the one the binary serves is checked by
# the API tests (openapi::the_committed_document_is_the_one_served).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mvn >/dev/null || { echo "check-openapi-client: mvn is missing (apt-get install maven)" >&2; exit 2; }
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mvn -q -B -f scripts/openapi-client/pom.xml compile \
  -Dopenapi.spec="$PWD/api/openapi.json" -Dbuild.dir="$build" >"$build/mvn.log" 2>&1 || {
  grep -E 'ERROR|error:|Errors:' -A3 "$build/mvn.log" | head -n 40 >&2
  echo "check-openapi-client: the client generated from api/openapi.json does not build" >&2
  exit 1
}
apis=$(find "$build/classes/highload/client/api" -name '*Api.class' | wc -l)
echo "check-openapi-client: a Java client of $apis API classes generated from api/openapi.json compiles"
