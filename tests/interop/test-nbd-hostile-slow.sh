#!/bin/bash
# SPDX-License-Identifier: MIT
# The hostile-client cases of nbd-hostile.py that wait on img-nbd's timeouts:
# a silent and a slow-drip client dropped by the handshake deadline, a client
# that never reads its replies dropped by the send timeout, the connection
# cap; a second client does verified I/O meanwhile (see test-nbd-hostile.sh).
HOSTILE_SET=slow
. "$(dirname "$0")/test-nbd-hostile.sh"
