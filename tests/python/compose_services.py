"""Parses a docker-compose file (YAML, anchors and merge keys resolved) and prints, per
service, its command, its WARDEN_CONFIG and where its volumes are mounted, as JSON.

Usage: compose_services.py COMPOSE_FILE
"""

import json
import sys

import yaml

with open(sys.argv[1]) as handle:
    compose = yaml.safe_load(handle)

services = {}
for name, service in compose["services"].items():
    services[name] = {
        "image": service.get("image"),
        "command": service.get("command"),
        "warden_config": (service.get("environment") or {}).get("WARDEN_CONFIG"),
        "mounts": [volume.split(":")[1] for volume in service.get("volumes", [])],
    }
print(json.dumps(services))
