#!/usr/bin/env bash
# The Greengrass component's lifecycle steps (recipe.yaml), run as root by the nucleus:
#
#   lifecycle.sh install    systemd/install.sh, then the settings from the component's
#                           configuration (configure.py) and --check-config; the unit is
#                           disabled at boot: the component starts it
#   lifecycle.sh run        start the service iot-jobs-agent and follow it; SIGTERM (the
#                           nucleus stopping the component) stops the service
#   lifecycle.sh shutdown   stop the service
#
# The agent runs as the systemd service, never as a child of the nucleus: one agent per device
# whatever starts it (the state directory is locked too), and stopping or restarting the
# component is stopping or restarting the service, whose KillMode=process lets a running dpkg
# finish (the nucleus would SIGKILL every process of the component 5 s after SIGTERM).
# Environment (recipe.yaml's Setenv): AGENT_SOURCE, AGENT_* configuration values,
# AWS_IOT_THING_NAME (set by the nucleus).
set -euo pipefail

unit=iot-jobs-agent.service
settings=/etc/iot-jobs-agent/settings.conf

case ${1:-} in
    install)
        bash "$AGENT_SOURCE/systemd/install.sh"
        /opt/iot-jobs-agent/venv/bin/python "$AGENT_SOURCE/greengrass/configure.py" "$settings"
        /opt/iot-jobs-agent/venv/bin/python /opt/iot-jobs-agent/jobs_agent.py \
            --check-config --config "$settings"
        systemctl disable "$unit" >/dev/null 2>&1 || true
        ;;
    run)
        trap 'systemctl stop "$unit"; exit 0' TERM INT
        systemctl start "$unit"
        echo "$unit started"
        while systemctl is-active --quiet "$unit"; do
            sleep 5 &
            wait $! || true
        done
        echo "$unit is no longer active ($(systemctl show -p Result --value "$unit")): the component errs and the nucleus runs it again" >&2
        exit 1
        ;;
    shutdown)
        systemctl stop "$unit"
        ;;
    *)
        echo "usage: lifecycle.sh install|run|shutdown" >&2
        exit 2
        ;;
esac
