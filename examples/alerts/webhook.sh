#!/bin/sh
# supervisor alert hook: post the alert to a webhook as Slack-style JSON,
# {"text": "..."} (Slack incoming webhooks, Mattermost, Rocket.Chat, Teams
# workflows, ntfy and most chat bridges take this shape).
#
#   [alerts]
#   command = ["/ABS/PATH/examples/alerts/webhook.sh"]
#
# Needs, in the environment the supervisor gives its alert command (see
# README.md beside this file):
#   ALERT_WEBHOOK_URL   the webhook's URL; it is a secret, so it is handed
#                       to curl on stdin, never on a command line (which any
#                       local user could read in `ps`)
# Optional:
#   ALERT_TITLE         put before the message (default: the host name)
#
# Exits non-zero when the post fails; the reason lands in supervisor.log.
set -eu

url=${ALERT_WEBHOOK_URL:-}
if [ -z "$url" ]; then
    echo "webhook.sh: ALERT_WEBHOOK_URL is not set; nothing sent" >&2
    exit 2
fi
title=${ALERT_TITLE:-$(uname -n)}
text="$title: ${SUPERVISOR_MESSAGE:-supervisor alert: ${SUPERVISOR_EVENT:-unknown event}}"

# The inside of a JSON string: backslash and double quote escaped, tab, CR
# and newline written as \t \r \n, the other control characters (which
# JSON forbids raw) dropped. Bytes from 0x80 up (UTF-8) pass unchanged.
json_string() {
    tab=$(printf '\t')
    cr=$(printf '\r')
    printf '%s' "$1" |
        LC_ALL=C tr -d '\000-\010\013\014\016-\037' |
        LC_ALL=C sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$tab/\\\\t/g" -e "s/$cr/\\\\r/g" |
        LC_ALL=C awk '{ printf "%s%s", (NR > 1 ? "\\n" : ""), $0 }'
}

# A curl config line: the value quoted, its backslashes and quotes escaped.
curl_option() {
    printf '%s = "%s"\n' "$1" "$(printf '%s' "$2" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

body="{\"text\": \"$(json_string "$text")\"}"

# --fail-with-body (curl 7.76+): a refusal's reason is printed too.
if ! answer=$(curl_option url "$url" | curl --config - --silent --show-error \
    --fail-with-body --max-time 20 \
    --header 'Content-Type: application/json' --data-binary "$body" 2>&1); then
    echo "webhook.sh: the post failed: $answer" >&2
    exit 1
fi
