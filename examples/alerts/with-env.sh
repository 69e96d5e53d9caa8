#!/bin/sh
# Run an alert hook with variables from a private file:
#
#   with-env.sh ENV_FILE COMMAND [ARG...]
#
#   [alerts]
#   command = ["/ABS/PATH/with-env.sh", "/ABS/PATH/alerts.env", "/ABS/PATH/telegram.sh"]
#
# ENV_FILE holds shell assignments, one a line, e.g.
#   TELEGRAM_BOT_TOKEN=123456:ABC-...
#   TELEGRAM_CHAT_ID=-1001234567890
# It is read with `.` (so it must be yours and trusted) and must not be
# readable by group or others (chmod 600): it holds secrets. Every variable
# it sets is exported to COMMAND.
#
# Why: the alert command inherits the supervisor's environment, and the job
# file `supervisor launchd install` writes sets only PATH. Editing the
# plist by hand works until the next `launchd install --force` rewrites it;
# a file beside the hooks survives that, and keeps the secrets out of the
# job file.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: with-env.sh ENV_FILE COMMAND [ARG...]" >&2
    exit 2
fi
file=$1
shift
if [ ! -f "$file" ] || [ ! -r "$file" ]; then
    echo "with-env.sh: cannot read $file; nothing sent" >&2
    exit 2
fi
# Any of the group or other permission bits set: refuse.
if [ -n "$(find "$file" -prune \( -perm -004 -o -perm -040 -o -perm -002 -o -perm -020 \) -print)" ]; then
    echo "with-env.sh: $file is readable or writable by group or others; chmod 600 it first; nothing sent" >&2
    exit 2
fi
set -a
# shellcheck disable=SC1090
. "$file"
set +a
exec "$@"
