#!/usr/bin/env bash
# Write a .env for docker-compose.yaml with a random value for every secret of .env.example (`make team-env`).
# An existing file is never overwritten. Usage: scripts/team-env.sh [PATH] (default: .env beside this repo's
# docker-compose.yaml); KEY=VALUE pairs in the environment variable TEAM_ENV_EXTRA are appended.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:-$ROOT/.env}"
if [ -e "$target" ]; then
  echo "$target exists; it is left as it is" >&2
  exit 0
fi
python3 - "$ROOT/.env.example" "$target" <<'PY'
import base64, os, secrets, sys

source, target = sys.argv[1], sys.argv[2]
lines = []
for line in open(source):
    key, sep, value = line.rstrip("\n").partition("=")
    if sep and not key.startswith("#") and not value:
        if key == "AIRFLOW_FERNET_KEY":
            value = base64.urlsafe_b64encode(os.urandom(32)).decode()
        else:
            value = secrets.token_urlsafe(24)
    lines.append(f"{key}{sep}{value}")
extra = os.environ.get("TEAM_ENV_EXTRA", "")
lines += [pair for pair in extra.split() if "=" in pair]
fd = os.open(target + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    f.write("\n".join(lines) + "\n")
os.replace(target + ".tmp", target)
PY
echo "wrote $target (mode 600): keep it out of version control"
