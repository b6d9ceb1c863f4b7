#!/usr/bin/env bash
# The image's base where no image registry answers (only Debian's mirror and PyPI): Debian
# bookworm made by debootstrap, Python 3.11 with a virtual environment first on PATH, as
# python:3.11-slim has it, imported into podman as localhost/python-local:3.11. Then:
#   podman build --build-arg BASE=localhost/python-local:3.11 --build-arg TORCH_INDEX=https://pypi.org/simple \
#       -f docker/Dockerfile -t mqstream:latest .
set -euo pipefail
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    bookworm "$root" http://deb.debian.org/debian
chroot "$root" python3 -m venv /opt/python
# the certificate authorities this machine trusts: a proxy in the way of PyPI signs with its own
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
tar -C "$root" -c . | podman import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    - localhost/python-local:3.11
