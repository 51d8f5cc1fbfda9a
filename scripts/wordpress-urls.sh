#!/usr/bin/env bash
# Prints the path of every published post of the demo WordPress (provisioned by
# scripts/wordpress.sh), one per line, oldest first, e.g. `/some-post-slug/`.
# Includes the test posts /protected-post/ and /closed-post/.
#
# Usage: scripts/wordpress-urls.sh [--pages]     (--pages: published pages too)
#
# Reads MariaDB directly as the strata_wp user; does not need root.
set -euo pipefail

types="'post'"
case "${1:-}" in
    "") ;;
    --pages) types="'post','page'" ;;
    *)
        echo "usage: $0 [--pages]" >&2
        exit 2
        ;;
esac

sql() {
    mariadb -ustrata_wp -pstrata_wp -N -B strata_wp -e "$1"
}

structure=$(sql "SELECT option_value FROM wp_options WHERE option_name = 'permalink_structure'")
where="post_type IN ($types) AND post_status = 'publish'"
if [ "$structure" = "/%postname%/" ]; then
    sql "SELECT CONCAT('/', post_name, '/') FROM wp_posts WHERE $where ORDER BY ID"
else
    # Plain permalinks: WordPress answers /?p=ID (pages and posts alike).
    sql "SELECT CONCAT('/?p=', ID) FROM wp_posts WHERE $where ORDER BY ID"
fi
