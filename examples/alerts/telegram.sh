#!/bin/sh
# supervisor alert hook: send the alert to a Telegram chat through the Bot
# API (https://core.telegram.org/bots/api#sendmessage).
#
#   [alerts]
#   command = ["/ABS/PATH/examples/alerts/telegram.sh"]
#
# Needs, in the environment the supervisor gives its alert command (see
# README.md beside this file; never write them into a file in git):
#   TELEGRAM_BOT_TOKEN  the bot's token from @BotFather, e.g. 123456:ABC-...;
#                       it is handed to curl on stdin, never on a command
#                       line (which any local user could read in `ps`)
#   TELEGRAM_CHAT_ID    the chat to write to (a user, group or channel id;
#                       the user must have sent /start to the bot first)
# Optional:
#   ALERT_TITLE         put before the message (default: the host name)
#   TELEGRAM_API        the API's base URL (default https://api.telegram.org)
#
# The text goes as a form field, which curl encodes: no escaping to get
# wrong, and no parse_mode, so nothing in the message is taken as markup.
# Exits non-zero when the message is not sent; the reason lands in
# supervisor.log.
set -eu

token=${TELEGRAM_BOT_TOKEN:-}
chat=${TELEGRAM_CHAT_ID:-}
if [ -z "$token" ] || [ -z "$chat" ]; then
    echo "telegram.sh: TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID must both be set; nothing sent" >&2
    exit 2
fi
api=${TELEGRAM_API:-https://api.telegram.org}
title=${ALERT_TITLE:-$(uname -n)}
text="$title: ${SUPERVISOR_MESSAGE:-supervisor alert: ${SUPERVISOR_EVENT:-unknown event}}"

# A curl config line: the value quoted, its backslashes and quotes escaped.
curl_option() {
    printf '%s = "%s"\n' "$1" "$(printf '%s' "$2" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

# --fail-with-body (curl 7.76+): Telegram's reason ("chat not found") is
# printed too.
if ! answer=$(curl_option url "$api/bot$token/sendMessage" | curl --config - --silent \
    --show-error --fail-with-body --max-time 20 \
    --data-urlencode "chat_id=$chat" --data-urlencode "text=$text" 2>&1); then
    echo "telegram.sh: sendMessage failed: $answer" >&2
    exit 1
fi
