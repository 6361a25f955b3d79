#!/bin/sh
# Creates the secret files docker-compose.yml reads, in deploy/secrets/ (or the folder given as
# the first argument). Existing files are kept, so running it again never rotates a secret.
# Random values are letters and digits only: safe in URLs, shells and PHP strings.
# google_client_secret is left empty: paste the OAuth client secret from the Google Cloud console
# into it (no trailing newline needed; one is ignored).
set -eu
dir=${1:-"$(dirname "$0")/secrets"}
umask 077
mkdir -p "$dir"
chmod 700 "$dir"  # only the owner may list or read them on the host

random() {
    # 48 random letters and digits
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 48
}

for name in db_password db_root_password wp_logged_in_key wp_logged_in_salt sidecar_secret_key; do
    if [ ! -s "$dir/$name" ]; then
        random >"$dir/$name"
        echo "created $dir/$name"
    fi
done
if [ ! -e "$dir/google_client_secret" ]; then
    : >"$dir/google_client_secret"
    echo "created $dir/google_client_secret (empty: paste your OAuth client secret into it)"
fi
# Compose bind-mounts each file as it is: the containers read it as their own (non-root)
# users, so the files themselves are world-readable inside the private folder.
chmod 644 "$dir"/db_password "$dir"/db_root_password "$dir"/wp_logged_in_key \
    "$dir"/wp_logged_in_salt "$dir"/sidecar_secret_key "$dir"/google_client_secret
