#!/usr/bin/env bash
# Make the Greengrass component's artifact: this repository's committed code as
# iot-jobs-agent.zip (every file under the folder iot-jobs-agent/), for recipe.yaml's
# Artifacts URI. Upload it to S3 as docs/greengrass.md shows.
#
#   greengrass/build-artifact.sh [OUTPUT]      # default: greengrass/iot-jobs-agent.zip
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
output=${1:-$here/greengrass/iot-jobs-agent.zip}
git -C "$here" archive --format=zip --prefix=iot-jobs-agent/ -o "$output" HEAD
echo "$output"
