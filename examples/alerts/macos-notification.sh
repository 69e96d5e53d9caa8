#!/bin/sh
# supervisor alert hook: a macOS notification (Notification Center).
#
#   [alerts]
#   command = ["/ABS/PATH/examples/alerts/macos-notification.sh"]
#
# Works when the supervisor runs in your login session: a LaunchAgent
# (`supervisor launchd install`) or a terminal. A LaunchDaemon (the system
# domain) has no one's screen to show it on. The notification comes from
# "Script Editor" (osascript): allow it once in System Settings >
# Notifications if nothing appears. Nothing leaves the machine, so use it
# beside telegram.sh or webhook.sh, not instead of them, when nobody sits
# at this Mac.
set -eu

title="supervisor: ${SUPERVISOR_EVENT:-alert}"
message=${SUPERVISOR_MESSAGE:-supervisor alert}

# The texts are passed as arguments to the script's run handler, not pasted
# into AppleScript source: quotes and backslashes in a message cannot break
# (or inject into) the script.
osascript \
    -e 'on run argv' \
    -e 'display notification (item 2 of argv) with title (item 1 of argv)' \
    -e 'end run' \
    "$title" "$message" >/dev/null
