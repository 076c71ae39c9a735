#!/usr/bin/env bash
# Install Debian's Slurm 22.05, munge, slurmdbd and MariaDB for a single-node test cluster.
# Needs root (CI runs as root); idempotent: installed packages are left as they are.
set -euo pipefail
packages=(slurm-wlm slurmdbd munge mariadb-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # policy-rc.d refuses service starts: no systemd here, start.sh starts the daemons itself.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
