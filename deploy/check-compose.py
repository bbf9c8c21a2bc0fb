#!/usr/bin/env python3
"""Checks deploy/docker-compose.yml and deploy/Dockerfile as far as a machine without
Docker can: the YAML parses; the services the pipeline needs are there, each with a
health check; every file they reference exists (bind mounts, env_file, build context,
Dockerfile, and the Dockerfile's COPY sources); every ${VAR} is defaulted, required with
a message, or one that deploy/secrets.sh writes.

    python3 deploy/check-compose.py SECRETS_DIR

SECRETS_DIR is a directory deploy/secrets.sh filled: the compose file's ./secrets/ is
checked against it, since the real one is generated and git-ignored. Prints one line per
problem and exits 1 if there is any; exits 3 if PyYAML is missing.
"""

import os
import re
import sys

try:
    import yaml
except ImportError:
    print("check-compose: PyYAML is not installed (apt-get install python3-yaml)")
    sys.exit(3)

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
NEEDED = ["nats", "ingest", "charts", "feedgen", "gateway", "archive"]


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    secrets = sys.argv[1]
    problems = []

    def exists(ref, what):
        """`ref` is relative to deploy/; ./secrets/ maps to SECRETS_DIR."""
        if ref.startswith("./secrets/"):
            path = os.path.join(secrets, ref[len("./secrets/"):])
        else:
            path = os.path.normpath(os.path.join(DEPLOY, ref))
        if not os.path.exists(path):
            problems.append(f"{what}: {ref} does not exist ({path})")
        return path

    with open(os.path.join(DEPLOY, "docker-compose.yml")) as f:
        text = f.read()
    compose = yaml.safe_load(text)
    services = compose.get("services") or {}
    for name in NEEDED:
        if name not in services:
            problems.append(f"service {name} is missing")
    if not str(services.get("nats", {}).get("image", "")).startswith("nats:2.14"):
        problems.append("service nats must use the official nats:2.14 image")

    env_file_vars = set()
    for name, svc in services.items():
        if "healthcheck" not in svc:
            problems.append(f"service {name} has no healthcheck")
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                exists(source, f"{name} volume")
        env_files = svc.get("env_file", [])
        for ref in [env_files] if isinstance(env_files, str) else env_files:
            path = exists(ref, f"{name} env_file")
            if os.path.exists(path):
                with open(path) as f:
                    env_file_vars |= {
                        line.split("=", 1)[0] for line in f if "=" in line and not line.startswith("#")
                    }
        build = svc.get("build")
        if build:
            context = exists(build["context"], f"{name} build context")
            dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
            if not os.path.exists(dockerfile):
                problems.append(f"{name}: Dockerfile {dockerfile} does not exist")
            else:
                check_dockerfile(dockerfile, context, problems)

    for var, rest in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", text):
        if rest.startswith((":-", "-", ":?", "?")):
            if rest.startswith((":?", "?")) and var not in env_file_vars:
                problems.append(f"${{{var}}} is required but deploy/secrets.sh does not write it")
            continue
        problems.append(f"${{{var}}} has neither a default nor a required message")

    for line in problems:
        print(f"check-compose: {line}")
    if not problems:
        print(f"check-compose: ok ({len(services)} services)")
    return 1 if problems else 0


def check_dockerfile(path, context, problems):
    """Every COPY source (not --from) exists in the build context."""
    with open(path) as f:
        lines = f.read().replace("\\\n", " ").splitlines()
    for line in lines:
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        for source in args[:-1]:
            if source != "." and not os.path.exists(os.path.join(context, source)):
                problems.append(f"{os.path.basename(path)}: COPY source {source} does not exist")


if __name__ == "__main__":
    sys.exit(main())
